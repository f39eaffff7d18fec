"""A cluster as the model sees it: GPUs per node, and per collective kind the bus bandwidth and
latency inside a node and between nodes (lcab/conf/cluster_model/<name>.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from omegaconf import OmegaConf

from lcab.compose import CONF_DIR
from lcab.errors import ConfigError

GROUP = CONF_DIR / "cluster_model"
KINDS = ("p2p", "all_to_all", "all_gather", "reduce_scatter")
LEVELS = ("intra", "inter")


@dataclass(frozen=True)
class Link:
    """One collective kind on one level: time = latency + bytes this rank sends / busbw."""

    busbw_gbps: float
    latency_us: float

    def seconds(self, nbytes: float) -> float:
        return self.latency_us * 1e-6 + nbytes / (self.busbw_gbps * 1e9)


@dataclass(frozen=True)
class ClusterModel:
    name: str
    gpu: str
    gpus_per_node: int
    peak_tflops: float
    hbm_gbps: float
    kernels: str  # calibration file stem
    kernel: str
    links: dict[str, dict[str, Link]] = field(default_factory=dict)  # level -> kind -> Link

    def link(self, level: str, kind: str) -> Link:
        return self.links[level][kind]

    def with_measured(self, busbw: dict[str, float], level: str = "intra") -> ClusterModel:
        """This model with the bus bandwidths a row measured in isolation (collective -> GB/s, at
        the cell's own message sizes, so the latency is inside them)."""
        links = {lv: dict(ks) for lv, ks in self.links.items()}
        for op, bw in busbw.items():
            if op in links[level] and bw and bw > 0:
                links[level][op] = Link(float(bw), 0.0)
        return replace(self, links=links)


def names() -> list[str]:
    return sorted(p.stem for p in GROUP.glob("*.yaml"))


def load(name: str) -> ClusterModel:
    path = GROUP / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"cluster_model={name} is not one of {', '.join(names())}")
    c = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    try:
        links = {
            lv: {k: Link(float(v["busbw_gbps"]), float(v["latency_us"])) for k, v in c["links"][lv].items()}
            for lv in LEVELS
        }
        missing = [f"{lv}.{k}" for lv in LEVELS for k in KINDS if k not in links[lv]]
        if missing:
            raise KeyError(", ".join(missing))
        return ClusterModel(
            name=c["name"],
            gpu=c["gpu"],
            gpus_per_node=int(c["gpus_per_node"]),
            peak_tflops=float(c["peak_tflops"]),
            hbm_gbps=float(c["hbm_gbps"]),
            kernels=c["kernels"],
            kernel=c["kernel"],
            links=links,
        )
    except (KeyError, TypeError) as e:
        raise ConfigError(f"cluster_model={name} ({path}) lacks {e}") from None


def for_device(device: str, world: int) -> ClusterModel:
    """The preset whose GPU a row's env.device names; a world above its node size needs the
    multi-node preset, so among matches the one with the most GPUs per node that fits is taken."""
    hits = [load(n) for n in names()]
    hits = [c for c in hits if c.gpu.lower() in (device or "").lower()]
    if not hits:
        raise ConfigError(f"no cluster_model for device '{device}' (presets: {', '.join(names())})")
    return max(hits, key=lambda c: c.gpus_per_node)


def path_of(name: str) -> Path:
    return GROUP / f"{name}.yaml"
