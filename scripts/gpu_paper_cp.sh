#!/usr/bin/env bash
# Issue 7 on one multi-GPU host (nvidia-h200-x2/x4/x8), resumable like gpu_paper_kernels.sh:
#   scripts/gpu_paper_cp.sh [SECONDS [OVERRIDES...]]
# 1. numerics: every strategy x mask at 1K tokens per GPU on the largest world, fwd_bwd, verify=true
# 2. the grid: +experiment=paper_cp_node (zigzag shards)
# 3. ring with balanced shards
# -> $DIR/{verify,results}.jsonl; DIR defaults to outputs/paper_cp. OVERRIDES go to every pass
# (e.g. cluster.nproc=2,4 on a 4-GPU host).
set -u
dir=${LCAB_CP_DIR:-outputs/paper_cp}
limit=${1:-0}
shift $(($# > 0 ? 1 : 0))
extra=("$@")
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
mkdir -p "$dir"
left() { if [ "$limit" -gt 0 ]; then echo $((limit - SECONDS)); else echo 1000000; fi; }
sweep() {  # name, store, overrides...
  local name=$1 store=$2 t
  shift 2
  t=$(left)
  [ "$t" -gt 5 ] || return 0
  echo "== $name ($t s left) $(date -u +%FT%TZ)"
  timeout --signal=TERM "$t" python3 -m lcab.run -m +experiment=paper_cp_node "$@" "${extra[@]}" \
    store="$dir/$store.jsonl" hydra.sweep.dir="$dir/sweeps/$name"
  echo "== $name exit $? after $SECONDS s"
}
sweep verify verify "cluster.nproc=${ngpu:-2}" "seqlen=\${lcab_per_gpu:1k}" bench.mode=fwd_bwd bench.verify=true
sweep grid results
sweep ring_balanced results cp=ring cp.shard=balanced
