"""USP (yunchang): Ulysses inside a group x ring across groups on a 2-D mesh.

cp.ulysses_intra_node (default true) puts each Ulysses group on consecutive ranks (one node,
NVLink) and the ring across them; false swaps the two.
"""

from __future__ import annotations

from lcab.config import ConfigError
from lcab.cp.base import Degrees, degree, register
from lcab.cp.ring import RingLike


@register
class Usp(RingLike):
    name = "usp"
    summary = "Ulysses degree x ring degree (2-D mesh), ring over Ulysses groups"

    def degrees(self, cp: dict, world: int) -> Degrees:
        u = degree(cp.get("ulysses_degree", 0), 0)
        r = degree(cp.get("ring_degree", 0), 0)
        if u == 0 and r == 0:
            raise ConfigError("usp needs cp.ulysses_degree or cp.ring_degree")
        if u == 0:
            u = world // r if world % r == 0 else 0
        if r == 0:
            r = world // u if world % u == 0 else 0
        if u * r != world:
            raise ConfigError(f"world size {world} is not ulysses degree {u} x ring degree {r} (usp)")
        return Degrees(ulysses=u, ring=r)
