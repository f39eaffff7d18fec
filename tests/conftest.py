import sys
from pathlib import Path

# Test helpers (e.g. wandb_records) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

from slurm_fixture import slurm  # noqa: F401  (a real local Slurm for the scale-out tests)
