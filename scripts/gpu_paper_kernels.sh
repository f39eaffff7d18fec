#!/usr/bin/env bash
# The paper's kernel study on one GPU (issue 6), resumable in slices:
#   scripts/gpu_paper_kernels.sh [SECONDS [OVERRIDES...]]
# 0. flex compile warm-up: one flex full-mask cell per seqlen, all at once (a cold static-shape
#    flex compile takes 100..230 s per seqlen on an H100; in parallel they fill the inductor
#    cache in ~5 min, and the sweep's flex cells then hit it). LCAB_PK_WARM=0 skips it.
# 1. the numerics pass: every kernel x mask at 1K, fwd_bwd, verify=true  -> $DIR/verify.jsonl
# 2. the timing sweep: +experiment=paper_kernels as written              -> $DIR/results.jsonl
# Both resume from their store, so a slice cut off by SECONDS (default: no limit) continues
# where it stopped when the script is run again. DIR defaults to outputs/paper_kernels.
# OVERRIDES go to both passes, e.g. kernel=flex to run one kernel's column.
set -u
dir=${LCAB_PK_DIR:-outputs/paper_kernels}
limit=${1:-0}
shift $(($# > 0 ? 1 : 0))
extra=("$@")
mkdir -p "$dir"
left() { if [ "$limit" -gt 0 ]; then echo $((limit - SECONDS)); else echo 1000000; fi; }
sweep() {  # name, overrides...
  local name=$1 t
  shift
  t=$(left)
  [ "$t" -gt 5 ] || return 0
  echo "== $name ($t s left) $(date -u +%FT%TZ)"
  timeout --signal=TERM "$t" python3 -m lcab.run -m +experiment=paper_kernels "$@" "${extra[@]}" \
    store="$dir/$name.jsonl" hydra.sweep.dir="$dir/sweeps/$name"
  echo "== $name exit $? after $SECONDS s"
}
warm() {
  local t s a
  [ "${LCAB_PK_WARM:-1}" = 1 ] || return 0
  for a in "${extra[@]}"; do  # a kernel= override without flex needs no flex compiles
    case $a in kernel=*flex*) ;; kernel=*) return 0 ;; esac
  done
  t=$(left)
  [ "$t" -gt 5 ] || return 0
  echo "== warm ($t s left) $(date -u +%FT%TZ)"
  for s in 1k 2k 4k 8k 16k 24k 32k 40k 48k; do
    timeout --signal=TERM "$t" python3 -m lcab.run +experiment=paper_kernels kernel=flex mask=full \
      seqlen=$s bench.mode=fwd bench.iters=3 bench.warmup=1 bench.budget_ms=0 bench.timeout_s=0 \
      store="$dir/warm/$s.jsonl" hydra.run.dir="$dir/warm/$s" >"$dir/warm/$s.log" 2>&1 &
  done
  wait
  echo "== warm done after $SECONDS s"
}
mkdir -p "$dir/warm"
warm
sweep verify seqlen=1k bench.mode=fwd_bwd bench.verify=true
sweep results
