#!/usr/bin/env bash
# Issue 16 on one host of W GPUs (nvidia-h200-x2: W = 2), in two resumable parts:
#   scripts/gpu_h200x2.sh PART SECONDS [OVERRIDES...]       PART = 1, 2, verify or grids; SECONDS: its time limit
# Part 1 (the targets): single-GPU baselines (cp=none, same total length), then the grid at 16K
#   tokens per GPU: kernels x {ulysses, ring, ring_allgather, usp, double_ring, torch_ring,
#   yunchang_usp} x {full, causal, full_document, causal_document} x {fwd, bwd}.
# Part 2: per-rank kernel calls of items 2 and 4 (scripts/cp_rank_calls.py), the verify pass
#   (1K tokens per GPU, fwd_bwd, verify=true), ring with balanced shards at 16K, the 8K grid with
#   baselines, the 32K grid with baselines, the one-GPU emulation (cp.emulate=W) of the 16K
#   cells, and the tables (python -m lcab.report.paper_cp, scripts/h200x2_table.py).
# Every pass appends to $DIR/<store>.jsonl and skips cells already ok (a rerun resumes); each
# cell records coll_busbw (every collective kind replayed alone: the isolated time that exposed
# communication is compared with) and rank_region_ms (layout copies and collectives).
# yunchang_usp needs yunchang on the GPU machine: ../shared/tools/gpu-wheels --cudnn yunchang==0.6.4
# (a pure-Python wheel; without it the rows are `unavailable`, naming the package).
# Env: LCAB_H200X2_DIR output folder (default outputs/h200x2; point it at $OUT);
#   LCAB_H200X2_KERNELS (default cudnn,sdpa_cudnn; add flash4 when it exists);
#   LCAB_H200X2_WORLD (default: the number of GPUs, 2 without nvidia-smi);
#   LCAB_H200X2_CPU=1: tiny CPU run (gloo, sdpa_math, 128..512 tokens per rank) to check the script.
# OVERRIDES go to every lcab pass (e.g. bench.iters=5).
# Estimate (H200, world 2, warmup 2 + iters 10 + 1 first + 4 instrumented calls per cell, and
# about 3 s per cell of set-up, cuDNN graph build and busbw probe): per 16K cell ~4 s fwd, ~5 s
# bwd; runnable cells per mode: cudnn 5 lcab strategies x 4 masks (the peers: unsupported rows),
# sdpa_cudnn 7 strategies x 2 masks (document masks: unsupported rows) = 34; x 2 modes = 68
# cells ~ 320 s + 16 baselines ~ 50 s + ~60 unsupported rows at ~0.5 s: part 1 ~ 400 s. Part 2:
# calls ~ 60 s, verify ~ 34 cells x 3 s ~ 100 s, balanced ~ 20 s, 8K ~ 250 s; the 32K grid
# (iters 5, ~8 s a cell) and the emulation take what is left and resume on a rerun.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
part=${1:?usage: gpu_h200x2.sh PART SECONDS [OVERRIDES...]}
limit=${2:-0}
shift $(($# > 1 ? 2 : 1))
extra=("$@")
dir=${LCAB_H200X2_DIR:-outputs/h200x2}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"
source "$here/_sweep.sh"

if [ "${LCAB_H200X2_CPU:-0}" = 1 ]; then
  world=${LCAB_H200X2_WORLD:-2}
  kernels=${LCAB_H200X2_KERNELS:-sdpa_math}
  k8=128 k16=256 k32=512 k1=64
  extra=(bench.device=cpu shape=small bench.warmup=0 bench.iters=1 bench.l2_flush=false "${extra[@]}")
  calls_args=(--shape small --iters 1)
else
  ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
  world=${LCAB_H200X2_WORLD:-$([ "${ngpu:-0}" -gt 1 ] && echo "$ngpu" || echo 2)}
  kernels=${LCAB_H200X2_KERNELS:-cudnn,sdpa_cudnn}
  k8=8192 k16=16384 k32=32768 k1=1024
  calls_args=(--shape paper --iters 5)
fi
lcab_cp=ulysses,ring,ring_allgather,usp,double_ring
peers=torch_ring,yunchang_usp
first_kernel=${kernels%%,*}
ranks="cluster.nproc=\${lcab_cp_ranks:$world}"

# grid TOKENS_PER_GPU NAME [OVERRIDES...]: baselines (cp=none) then the CP cells, one store.
grid() {
  local tok=$1 name=$2
  shift 2
  sweep_pass h200x2 "base$name" results "$ranks" "seqlen=$((tok * world))" "kernel=$kernels" cp=none "$@"
  sweep_pass h200x2 "grid$name" results "$ranks" "seqlen=$((tok * world))" "kernel=$kernels" "cp=$lcab_cp,$peers" "$@"
}

# calls CP SHARD MASK: per-rank kernel calls and step times on one GPU -> $dir/rank_calls.jsonl
calls() {
  local t
  t=$(left)
  [ "$t" -gt 5 ] || return 0
  echo "== calls $1/$2 $3 ($t s left)"
  timeout --signal=TERM "$t" python3 "$here/cp_rank_calls.py" --kernel "$first_kernel" --cp "$1" --shard "$2" \
    --mask "$3" --seqlen $((k16 * world)) --world "$world" "${calls_args[@]}" --out "$dir/rank_calls.jsonl"
  echo "== calls exit $? after $SECONDS s"
}

other_grids() {
  sweep_pass h200x2 balanced16k results "$ranks" "seqlen=$((k16 * world))" "kernel=$first_kernel" cp=ring \
    cp.shard=balanced mask=causal,causal_document
  grid "$k8" 8k
  grid "$k32" 32k bench.warmup=1 bench.iters=5
  sweep_pass h200x2 emulate16k emulated cluster.nproc=1 "seqlen=$((k16 * world))" "kernel=$first_kernel" \
    "cp=$lcab_cp" "cp.emulate=$world"
}

verify_pass() {
  sweep_pass h200x2 verify verify "$ranks" "seqlen=$((k1 * world))" "kernel=$kernels" "cp=$lcab_cp,$peers" \
    bench.mode=fwd_bwd bench.verify=true
}

case $part in
verify) # the verify pass of part 2 alone
  verify_pass
  ;;
1)
  grid "$k16" 16k
  ;;
2)
  calls ring_allgather zigzag causal           # item 2: cut vs uncut backward calls per rank
  calls ring_allgather zigzag causal_document
  calls ring zigzag causal_document            # item 4: zigzag vs balanced, calls per rank
  calls ring balanced causal_document
  verify_pass
  other_grids
  ;;
grids) # part 2 without the per-rank calls and the verify pass
  other_grids
  ;;
*)
  echo "lcab: PART must be 1, 2, verify or grids, not $part" >&2
  exit 2
  ;;
esac
# The tables (CPU only, seconds): paper_cp's (efficiency.md among them) and the README's.
if [ -f "$dir/results.jsonl" ]; then
  emu=()
  [ -f "$dir/emulated.jsonl" ] && emu=(--emulated "$dir/emulated.jsonl")
  python3 -m lcab.report.paper_cp "$dir/results.jsonl" "${emu[@]}" --out "$dir/report" || echo "== paper_cp failed"
  python3 "$here/h200x2_table.py" "$dir" --out "$dir/README_table.md" || echo "== table failed"
fi
echo "== part $part done after $SECONDS s; stores in $dir"
