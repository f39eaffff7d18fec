"""Mask patterns as slice lists, and every kernel-facing form derived from them."""

from lcab.masks.registry import build, names, register
from lcab.masks.slices import AttnMask, RowIntervals, Slice, SliceType

__all__ = ["AttnMask", "RowIntervals", "Slice", "SliceType", "build", "names", "register"]
