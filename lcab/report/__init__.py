"""Tables, figures and an index (HTML + markdown) from one or many results stores: `python -m lcab.report`."""

from lcab.report.cli import render

__all__ = ["render"]
