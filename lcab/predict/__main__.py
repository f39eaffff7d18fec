import sys

from lcab.predict.cli import main

sys.exit(main(sys.argv[1:]))
