"""USP (yunchang): Ulysses inside a group x ring across groups on a 2-D mesh.

cp.ulysses_intra_node (default true) puts each Ulysses group on consecutive ranks (one node,
NVLink) and the ring across them; false swaps the two.
"""

from __future__ import annotations

from lcab.config import MeshCPConfig
from lcab.cp.base import Degrees, mesh_degrees
from lcab.cp.rings import RingLike


class Usp(RingLike):
    name = "usp"
    summary = "Ulysses degree x ring degree (2-D mesh), ring over Ulysses groups"

    config = MeshCPConfig

    def degrees(self, cp: MeshCPConfig, world: int) -> Degrees:
        return mesh_degrees(cp, world, self.name)
