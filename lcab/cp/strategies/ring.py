"""Ring attention (P2P): K/V travel around the ring while each rank computes its queries against
the block it holds; partial (out, lse) merge in fp32; backward sends dK/dV around with K/V
(lcab.cp.rings has the rotation and the plan; the same code runs usp and double_ring)."""

from __future__ import annotations

from lcab.cp.base import RingOnly
from lcab.cp.rings import RingLike


class Ring(RingOnly, RingLike):
    name = "ring"
    summary = "P2P ring: K/V rotate with send/recv overlapped with compute, fp32 LSE merge"
