"""Cell ids are an explicit identity per component: the committed stores keep their ids, a store
made by an earlier main still resumes, and a new config field left at its default changes no id."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from lcab_cli import lcab_run, rows

from lcab import config as lcab_config
from lcab.compose import CONF_DIR
from lcab.config import Config, CPConfig, FlexConfig, KernelConfig, register_configs, schema_defaults
from lcab.identity import LATER, NOT_MEASURED, V1, cell_id
from lcab.plan import plan_cell

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
# Committed stores whose rows carry every v1 field: every id must recompute.
V1_STORES = ("h100/paper_kernels/results.jsonl", "h200_cp_emulate/results.jsonl")
# Made before kernel.dynamic, bench.budget_ms/min_iters/max_spread/extend_ms existed: their ids
# already changed when those fields were added, before identities were declared.
PRE_V1_STORES = ("h100/cudnn_32k.jsonl",)
# Written by main at e2e0b8d (tests/data/README line in the docstring of test_old_store_resumes).
MAIN_STORE = ROOT / "tests" / "data" / "store_main_e2e0b8d.jsonl"


def _rows(rel: str) -> list[dict]:
    return [json.loads(line) for line in (RESULTS / rel).read_text().splitlines() if line.strip()]


def _has_every_v1_field(cfg: dict) -> bool:
    return all(f in cfg.get(c, {}) for c, fs in V1.items() if c for f in fs)


def _legacy_id(cfg: dict) -> str:
    """The rule before identities were declared: every field but a fixed skip list."""
    ident = {k: v for k, v in cfg.items() if k not in NOT_MEASURED[""]}
    ident["cp"] = {k: v for k, v in ident["cp"].items() if k != "busbw"}
    return hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


@pytest.mark.parametrize("rel", V1_STORES)
def test_committed_store_ids_recompute(rel):
    stored = _rows(rel)
    assert stored and all("config" in r and _has_every_v1_field(r["config"]) for r in stored)
    defaults = schema_defaults()
    wrong = [r["cell_id"] for r in stored if cell_id(r["config"], defaults) != r["cell_id"]]
    assert not wrong, f"{rel}: {len(wrong)} of {len(stored)} ids changed, e.g. {wrong[:3]}"


@pytest.mark.parametrize("rel", PRE_V1_STORES)
def test_pre_v1_store_is_recognised(rel):
    """A store older than v1 lacks a v1 field (so no id rule of today's config can give its ids);
    its ids were those of the rule of its day."""
    stored = _rows(rel)
    assert stored and not any(_has_every_v1_field(r["config"]) for r in stored)
    assert all(_legacy_id(r["config"]) == r["cell_id"] for r in stored)


def test_every_committed_store_with_v1_rows_keeps_ids():
    """Any store committed under docs/results, now or later: its v1 rows keep their ids."""
    defaults = schema_defaults()
    checked = 0
    for path in sorted(RESULTS.rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.strip().startswith("{") else {}
            cfg = row.get("config")
            if not isinstance(cfg, dict) or row.get("cell_id") == "invalid-config":
                continue
            if _has_every_v1_field(cfg):
                assert cell_id(cfg, defaults) == row["cell_id"], f"{path}: {row['cell_id']}"
                checked += 1
    assert checked >= 2160 + 49


def test_every_schema_field_is_declared():
    """A new field must say whether it changes what is measured (LATER, with the default it was
    introduced with) or not (NOT_MEASURED); v1 fields are frozen."""
    schemas = [("", Config)] + [(g, n) for g in lcab_config.GROUPS for n in lcab_config.group_schemas(g)]
    for group, node in schemas:
        if group in NOT_MEASURED[""]:  # cluster, logger: none of their fields is measured
            continue
        for f in dataclasses.fields(node):
            if group == "" and f.name in lcab_config.GROUPS:
                continue
            declared = (*V1.get(group, {}), *LATER.get(group, {}), *NOT_MEASURED.get(group, ()))
            # shape is recorded resolved (batch, heads, dtype): preset is folded into those.
            if group == "shape" and f.name == "preset":
                continue
            assert f.name in declared, f"{group}.{f.name}: add it to lcab/identity.py LATER or NOT_MEASURED"


def _compose(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _plan_like(row_cfg: dict):
    """Today's plan of a committed row's cell: its options and every field the option carries."""
    c = row_cfg
    picks = [f"kernel={c['kernel']['name']}", f"mask={c['mask']['name']}", f"cp={c['cp']['name']}"]
    cfg = _compose([*picks, f"seqlen={c['seqlen']}", f"cluster.nproc={c['world']}"])
    for group in ("kernel", "cp", "mask", "bench", "shape"):
        for key, value in c[group].items():
            if key in cfg[group]:
                cfg[group][key] = value
    return plan_cell(cfg)


def test_todays_plan_reproduces_committed_ids(monkeypatch):
    """The resume property for the committed GPU stores: planning a row's cell today (CUDA
    claimed, nothing runs) gives the row's id. A sample: every kernel, mask and strategy."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    sample: dict[tuple, dict] = {}
    for rel in V1_STORES:
        for r in _rows(rel):
            c = r["config"]
            sample.setdefault((c["kernel"]["name"], c["cp"]["name"]), r)
            sample.setdefault((c["mask"]["name"],), r)
    assert len(sample) >= 12 + 10
    for r in sample.values():
        assert _plan_like(r["config"]).cell_id == r["cell_id"], r["config"]


def test_new_field_at_default_keeps_ids(monkeypatch):
    """A field added to a schema (here kernel.new_knob) leaves every id alone at its default and
    makes a new id when set; the legacy rule would have changed every id."""
    row = _rows(V1_STORES[0])[0]
    base = cell_id(row["config"], schema_defaults())

    @dataclasses.dataclass
    class KernelWithKnob(KernelConfig):
        new_knob: int = 0

    monkeypatch.setitem(lcab_config.GROUPS, "kernel", KernelWithKnob)
    cs = ConfigStore.instance()
    cs.store(group="kernel", name="kernel_schema", node=KernelWithKnob)
    try:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        planned = _plan_like(row["config"])
        assert planned.config["kernel"]["new_knob"] == 0
        assert planned.cell_id == base == row["cell_id"]
        assert _legacy_id(planned.config) != row["cell_id"]  # the old rule: every id changes
        knob = {**planned.config, "kernel": {**planned.config["kernel"], "new_knob": 1}}
        assert cell_id(knob, schema_defaults()) != base
        # A whole new group left at its defaults adds nothing either.
        grouped = {**planned.config, "model": {}}
        assert cell_id(grouped, schema_defaults()) == base
    finally:
        cs.store(group="kernel", name="kernel_schema", node=KernelConfig)


SWEEPS = (
    ["-m", "kernel=sdpa_math,sdpa", "mask=causal,full_document", "seqlen=256"],
    ["cp=ring", "cp.emulate=2", "kernel=sdpa_math", "mask=causal_document", "seqlen=512"],
)


def test_old_store_resumes(tmp_path):
    """MAIN_STORE was written by main at e2e0b8d with exactly these two commands (then copied
    here): today's code skips every one of its cells and appends nothing."""
    store = tmp_path / "results.jsonl"
    shutil.copy(MAIN_STORE, store)
    before = len(rows(store))
    assert before == 5
    skipped = 0
    for i, args in enumerate(SWEEPS):
        out = ["hydra.sweep.dir=" if args[0] == "-m" else "hydra.run.dir=", str(tmp_path / f"o{i}")]
        p = lcab_run(
            tmp_path,
            *args,
            "bench.iters=1",
            "bench.warmup=0",
            f"store={store}",
            "".join(out),
        )
        assert p.returncode == 0, p.stderr[-2000:]
        lines = {line.strip() for line in p.stdout.splitlines()}  # a sweep repeats it in its summary
        skipped += sum(line.startswith("[skip]") for line in lines)
    assert skipped == before
    assert len(rows(store)) == before


def test_spec_is_the_options_schema():
    """Cell.spec: the config as the option's own dataclasses, defaults from the schemas."""
    flex = plan_cell(_compose(["kernel=flex", "kernel.block_size=64", "seqlen=256", "bench.device=cpu"]))
    assert type(flex.spec.kernel) is FlexConfig
    assert (flex.spec.kernel.block_size, flex.spec.kernel.mask_mod) == (64, None)
    assert isinstance(flex.spec.cp, CPConfig) and flex.spec.cp.busbw is True
    assert (flex.spec.seqlen, flex.spec.world, flex.spec.bench.device) == (256, 1, "cpu")
    sdpa = plan_cell(_compose(["kernel=sdpa", "seqlen=256", "bench.device=cpu"]))
    assert type(sdpa.spec.kernel) is KernelConfig and sdpa.config["kernel"] == {"name": "sdpa"}


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (("kernel=sdpa", "kernel.block_size=64"), "Key 'block_size' not in 'KernelConfig'"),  # flex's
        (("kernel=flex_schema",), "kernel=flex_schema is not an option"),
        (("mask=causal", "mask.window=5"), "Key 'window' not in 'MaskConfig'"),  # sliding windows'
        (("mask=causal_doc", "mask.sparse_block=64"), "Key 'sparse_block' not in 'DocMaskConfig'"),
        (("mask=sliding_window_schema",), "mask=sliding_window_schema is not an option"),
        (("cp=ring", "cp.ulysses_degree=2"), "Key 'ulysses_degree' not in 'RingCPConfig'"),  # usp's
        (("cp=ring_schema",), "cp=ring_schema is not an option"),
    ],
)
def test_option_schema_rejects_other_options_keys(tmp_path, overrides, needle):
    p = lcab_run(tmp_path, *overrides, "seqlen=256", f"hydra.run.dir={tmp_path / 'o'}")
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert len(lines) == 1 and lines[0].startswith("lcab: ") and needle in lines[0], p.stderr
    assert p.returncode == 2, p.returncode


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "cp").glob("*.yaml")))
def test_cp_option_composes_to_its_strategys_schema(option):
    """Each strategy's YAML composes to the schema its class names (Strategy.config), carrying
    only the degrees it reads; the planned spec is that schema with the YAML's degrees."""
    from omegaconf import OmegaConf

    from lcab.cp import registry

    cfg = _compose([f"cp={option}"]).cp
    schema = registry.get(option).config
    assert OmegaConf.get_type(cfg) is schema
    assert set(cfg) == {f.name for f in dataclasses.fields(schema)}
    spec = lcab_config.typed("cp", OmegaConf.to_container(cfg))
    assert type(spec) is schema and dataclasses.asdict(spec) == OmegaConf.to_container(cfg)


def test_mask_spec_is_the_patterns_schema():
    cell = plan_cell(_compose(["mask=causal_doc", "seqlen=256", "bench.device=cpu"]))
    assert type(cell.spec.mask) is lcab_config.DocMaskConfig
    assert set(cell.config["mask"]) == {f.name for f in dataclasses.fields(lcab_config.DocMaskConfig)}
    causal = plan_cell(_compose(["mask=causal", "seqlen=256", "bench.device=cpu"]))
    assert causal.config["mask"] == {"name": "causal", "seed": 0}
