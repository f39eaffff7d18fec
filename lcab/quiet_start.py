"""Imported first by the entry point: Ctrl-C while torch and Hydra import (seconds on a small
machine) ends with one line and exit 130 instead of a traceback from inside an import."""

from lcab.errors import quiet_interrupt_while_starting

quiet_interrupt_while_starting()
