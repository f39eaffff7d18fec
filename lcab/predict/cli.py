"""python -m lcab.predict COMMAND ...

  recommend cluster_model=NAME mask=M seqlen=S world=W [kernel=K] [mode=fwd|bwd|fwd_bwd]
            [shape=paper|small] [--json]      rank every candidate (strategy, shard, degrees)
  validate STORE... [--cluster NAME] [--calibration FILE]
                                              predicted vs measured for every ok CP cell
  calibrate NAME STORE... [--masks M,M] [--min-seqlen S] [--mono STORE... [--mono-strategy S]] [--out FILE]
                                              fit the step kernel on kernel rows, write the file
  links STORE...                              busbw each collective reached in isolation (rows' coll_busbw)
  sweep cluster_model=NAME mask=M [per_gpu=8k] [worlds=8,16,...,1024] [--json] [--figure PATH]
                                              best prediction per strategy and world
  paper [cluster_model=h100_dgx_ib] [kernel=K]  the ranking beside ANCHORS.md section 5 (markdown)
  when [cluster_model=h100_dgx_ib] [masks=..] [worlds=8,64,512] [per_gpu=8k]
                                              which strategy when (markdown)

Bad input: one `lcab: ...` line and exit 2.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from lcab.config import parse_seqlen
from lcab.errors import ConfigError, Unsupported
from lcab.predict import calibrate as cal
from lcab.predict import cluster as clusters
from lcab.predict.cells import read_cells, store_files, store_name
from lcab.predict.planonly import build_mask, shape_spec
from lcab.predict.recommend import recommend

SHAPES = {"paper": (1, 64, 8, 128, "bf16"), "small": (1, 8, 2, 32, "fp32")}
MODES = ("fwd", "bwd", "fwd_bwd")
REC_KEYS = ("cluster_model", "mask", "seqlen", "world", "kernel", "mode", "shape")
SWEEP_KEYS = ("cluster_model", "mask", "per_gpu", "worlds", "kernel", "mode", "shape")
MAX_WORLD = 1024


def _pairs(args: list[str], allowed: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for a in args:
        if "=" not in a:
            raise ConfigError(f"'{a}' is not KEY=VALUE (keys: {', '.join(allowed)})")
        k, v = a.split("=", 1)
        if k not in allowed:
            raise ConfigError(f"'{k}' is not one of {', '.join(allowed)}")
        out[k] = v
    return out


def _int(key: str, text: str, low: int, high: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise ConfigError(f"{key}={text} is not an integer") from None
    if not low <= v <= high:
        raise ConfigError(f"{key}={v} is outside {low}..{high}")
    return v


def _setting(kv: dict, required: tuple[str, ...]):
    missing = [k for k in required if k not in kv]
    if missing:
        raise ConfigError(f"missing {', '.join(k + '=' for k in missing)}")
    cm = clusters.load(kv["cluster_model"])
    shape_name = kv.get("shape", "paper")
    if shape_name not in SHAPES:
        raise ConfigError(f"shape={shape_name} is not one of {', '.join(SHAPES)}")
    mode = kv.get("mode", "fwd")
    if mode not in MODES:
        raise ConfigError(f"mode={mode} is not one of {', '.join(MODES)}")
    calib = cal.load(cm.kernels)
    return cm, shape_spec(*SHAPES[shape_name]), mode, calib, kv.get("kernel", cm.kernel)


def cmd_recommend(args: list[str]) -> int:
    as_json = "--json" in args
    kv = _pairs([a for a in args if a != "--json"], REC_KEYS)
    cm, shape, mode, calib, kernel = _setting(kv, ("cluster_model", "mask", "seqlen", "world"))
    world = _int("world", kv["world"], 2, MAX_WORLD)
    mask = build_mask(kv["mask"], parse_seqlen(kv["seqlen"]))
    ranked = recommend(mask, world, shape, cm, calib, kernel, mode)
    if as_json:
        print(json.dumps([p.to_dict() for p in ranked.predictions], indent=1))
        return 0
    print(f"lcab.predict: {cm.name} {kernel} mask={mask.name} S={mask.seqlen_q} world={world} {mode}")
    print(
        f"{'rank':>4} {'strategy':<15} {'shard':<9} {'degrees':<13} {'time_ms':>10} {'TFLOPs/s/GPU':>13}  bottleneck"
    )
    for i, p in enumerate(ranked.predictions, 1):
        deg = f"U{p.degrees['ulysses']}xR{p.degrees['ring']}" + (
            f"/w{p.degrees['windows']}" if p.strategy == "double_ring" else ""
        )
        print(
            f"{i:>4} {p.strategy:<15} {p.shard:<9} {deg:<13} {p.time_ms:>10.3f} {p.tflops_per_gpu:>13.1f}  {p.bottleneck}"
        )
    for d in ranked.dropped:
        print(f"   - {d}")
    return 0


def cmd_validate(args: list[str]) -> int:
    from lcab.predict.validate import summary, validate

    stores, opts = _split_opts(args, ("--cluster", "--calibration"))
    if not stores:
        raise ConfigError("validate needs at least one STORE")
    missing = [s for s in stores if not Path(s).exists()]
    if missing:
        raise ConfigError(f"store {missing[0]} does not exist")
    cal_path = Path(opts["--calibration"]) if "--calibration" in opts else None
    checked = validate(stores, opts.get("--cluster"), cal_path)
    for c in checked:
        print(c.line())
    print(summary(checked))
    return 0


def cmd_calibrate(args: list[str]) -> int:
    if not args:
        raise ConfigError("calibrate needs CLUSTER_MODEL and STORE...")
    name, rest = args[0], args[1:]
    stores: list[str] = []
    mono: list[str] = []
    out: Path | None = None
    only: str | None = None
    masks: list[str] | None = None
    min_seqlen = 0
    mode = "stores"
    for a in rest:
        if a in ("--mono", "--out", "--mono-strategy", "--masks", "--min-seqlen"):
            mode = a
        elif mode == "--out":
            out, mode = Path(a), "stores"
        elif mode == "--mono-strategy":
            only, mode = a, "stores"
        elif mode == "--masks":
            masks, mode = a.split(","), "stores"
        elif mode == "--min-seqlen":
            min_seqlen, mode = parse_seqlen(a), "stores"
        else:
            (mono if mode == "--mono" else stores).append(a)
    for s in stores + mono:
        if not Path(s).exists():
            raise ConfigError(f"store {s} does not exist")
    path = cal.calibrate(name, stores, mono, out, only, masks, min_seqlen)
    c = cal.load("", path)
    for k, ms in sorted(c.fits.items()):
        for m, f in sorted(ms.items()):
            print(
                f"{c.device} {k} {m}: call {f.coef[0] * 1e6:.1f} us, tile rate "
                f"{(1 / f.coef[1] / 1e12) if f.coef[1] else float('inf'):.0f} TFLOPs/s, "
                f"row {f.coef[2] * 1e12:.3f} ps/elem; rel rms {f.rel_rms:.1%} over {len(f.cells)} rows"
            )
    print(f"calibration: {store_name(path)} ({len(c.fitted_cells)} cells fitted on)")
    return 0


def cmd_links(args: list[str]) -> int:
    from lcab.predict.validate import measured_busbw

    if not args:
        raise ConfigError("links needs at least one STORE")
    per: dict[tuple[str, int], list[float]] = defaultdict(list)
    for c in read_cells([str(p) for p in store_files(args)]):
        for op, bw in measured_busbw(c).items():
            per[(op, c.world)].append(bw)
    if not per:
        print("no coll_busbw in these rows (real CP cells with cp.busbw=true record it)")
        return 0
    for (op, w), v in sorted(per.items()):
        print(
            f"{op:<15} world {w:>4}: busbw median {np.median(v):.1f} GB/s (min {min(v):.1f}, max {max(v):.1f}, {len(v)} cells)"
        )
    return 0


def cmd_sweep(args: list[str]) -> int:
    from lcab.predict.scaling import sweep

    args, opts = _split_opts(args, ("--figure",))
    fig = opts.get("--figure")
    as_json = "--json" in args
    kv = _pairs([a for a in args if a != "--json"], SWEEP_KEYS)
    cm, shape, mode, calib, kernel = _setting(kv, ("cluster_model", "mask"))
    per_gpu = parse_seqlen(kv.get("per_gpu", "8k"))
    worlds = [
        _int("worlds", w, 2, MAX_WORLD) for w in kv.get("worlds", "8,16,32,64,128,256,512,1024").split(",")
    ]
    rows = sweep(kv["mask"], per_gpu, worlds, shape, cm, calib, kernel, mode)
    if fig:
        from lcab.predict.scaling import figure

        title = f"predicted, {cm.name}, {kernel}, {kv['mask']}, {per_gpu} tokens per GPU, {mode}"
        print(f"figure: {figure(rows, Path(fig), title)}", file=sys.stderr)
    if as_json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(
                f"world {r['world']:>5} {r['strategy']:<15} {r['shard']:<9} {r['tflops_per_gpu']:>7.1f} TFLOPs/s/GPU  {r['bottleneck']}"
            )
    return 0


def _split_opts(args: list[str], names: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    pos, opts, i = [], {}, 0
    while i < len(args):
        if args[i] in names:
            if i + 1 >= len(args):
                raise ConfigError(f"{args[i]} needs a value")
            opts[args[i]] = args[i + 1]
            i += 2
        elif args[i].startswith("--") and args[i] != "--json":
            raise ConfigError(f"unknown option {args[i]} (options: {', '.join(names)})")
        else:
            pos.append(args[i])
            i += 1
    return pos, opts


def cmd_paper(args: list[str]) -> int:
    """The H100 preset's ranking beside ANCHORS.md section 5 (markdown)."""
    from lcab.predict.paper import compare, markdown

    kv = _pairs(args, ("cluster_model", "kernel"))
    cm, shape, _, calib, kernel = _setting({"cluster_model": "h100_dgx_ib", **kv}, ("cluster_model",))
    print("\n".join(markdown(compare(shape, cm, calib, kernel))))
    return 0


def cmd_when(args: list[str]) -> int:
    """Which strategy when: the best candidate per mask and world (markdown)."""
    from lcab.predict.when import table

    kv = _pairs(args, ("cluster_model", "kernel", "masks", "worlds", "per_gpu", "mode"))
    cm, shape, mode, calib, kernel = _setting({"cluster_model": "h100_dgx_ib", **kv}, ("cluster_model",))
    masks = kv.get("masks", "full,causal,full_document_long,causal_document_long").split(",")
    worlds = [_int("worlds", w, 2, MAX_WORLD) for w in kv.get("worlds", "8,64,512").split(",")]
    per_gpu = parse_seqlen(kv.get("per_gpu", "8k"))
    print("\n".join(table(masks, worlds, per_gpu, shape, cm, calib, kernel, mode)))
    return 0


COMMANDS = {
    "recommend": cmd_recommend,
    "validate": cmd_validate,
    "calibrate": cmd_calibrate,
    "links": cmd_links,
    "sweep": cmd_sweep,
    "paper": cmd_paper,
    "when": cmd_when,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    cmd = COMMANDS.get(argv[0])
    try:
        if cmd is None:
            raise ConfigError(f"'{argv[0]}' is not a command ({', '.join(COMMANDS)})")
        return cmd(argv[1:])
    except (ConfigError, Unsupported, ValueError) as e:
        print(f"lcab: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
