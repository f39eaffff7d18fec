"""Alpha-beta time of each message on the topology: a call's level (NVLink inside a node, the
network between nodes) follows from where its group's ranks sit (ranks fill nodes in order,
gpus_per_node each; Ulysses groups are consecutive ranks, lcab.cp.base.Topology).

time = latency + bytes this rank sends / busbw, with busbw in nccl-tests' terms (lcab.cp.busbw):
for every collective that makes the time the bytes a rank sends over its own link divided by
that link's bus bandwidth. An all-to-all that spans nodes sends (G - n)/G of its buffer over
the network and the rest over NVLink at the same time; the slower part decides.
"""

from __future__ import annotations

import numpy as np

from lcab.cp.base import Topology
from lcab.predict.cluster import ClusterModel
from lcab.predict.planonly import CellPlan


def node(rank: int, gpn: int) -> int:
    return rank // gpn


def level(ranks: list[int], gpn: int) -> str:
    return "intra" if len({node(r, gpn) for r in ranks}) == 1 else "inter"


def all_to_all_s(cluster: ClusterModel, ranks: list[int], sent: float) -> float:
    """One all-to-all in which this rank sends `sent` bytes spread evenly over the others."""
    g, gpn = len(ranks), cluster.gpus_per_node
    if g <= 1 or sent <= 0:
        return 0.0
    mine = node(ranks[0], gpn)
    inter = sum(1 for r in ranks[1:] if node(r, gpn) != mine)
    per_peer = sent / (g - 1)
    if inter == 0:
        return cluster.link("intra", "all_to_all").seconds(sent)
    t_inter = cluster.link("inter", "all_to_all").seconds(per_peer * inter)
    t_intra = cluster.link("intra", "all_to_all").seconds(per_peer * (g - 1 - inter))
    return max(t_inter, t_intra)


def collective_s(cluster: ClusterModel, op: str, ranks: list[int], sent: float) -> float:
    if op == "all_to_all":
        return all_to_all_s(cluster, ranks, sent)
    if len(ranks) <= 1 or sent <= 0:
        return 0.0
    return cluster.link(level(ranks, cluster.gpus_per_node), op).seconds(sent)


def hop_s(cluster: ClusterModel, frm: int, to: int, nbytes: float) -> float:
    gpn = cluster.gpus_per_node
    lv = "intra" if node(frm, gpn) == node(to, gpn) else "inter"
    return cluster.link(lv, "p2p").seconds(nbytes)


def topology(plan: CellPlan) -> Topology:
    return Topology(world=plan.world, rank=0, deg=plan.deg, intra=True)


def ring_hops(plan: CellPlan, cluster: ClusterModel, nbytes: float, dim: str = "ring") -> np.ndarray:
    """[R] seconds of the hop that brings member i its next block on `dim` (ring, inner or
    outer), for Ulysses index 0 (every Ulysses index has the same layout up to a shift)."""
    topo, r = topology(plan), plan.deg.ring
    nw = max(1, plan.deg.windows) if plan.strategy == "double_ring" else 1
    ws = r // nw
    out = np.zeros(r)
    for i in range(r):
        w, j = divmod(i, ws)
        if dim == "inner":
            prev = w * ws + (j - 1) % ws
        elif dim == "outer":
            prev = ((w - 1) % nw) * ws + j
        else:
            prev = (i - 1) % r
        out[i] = hop_s(cluster, topo.rank_of(prev, 0), topo.rank_of(i, 0), nbytes)
    return out


def uly_ranks(plan: CellPlan) -> list[int]:
    return topology(plan).uly_ranks(0)


def ring_ranks(plan: CellPlan) -> list[int]:
    return topology(plan).ring_ranks(0)
