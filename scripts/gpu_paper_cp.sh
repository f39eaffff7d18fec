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
source "$(dirname "$0")/_sweep.sh"
sweep_pass paper_cp_node verify verify "cluster.nproc=${ngpu:-2}" "seqlen=\${lcab_per_gpu:1k}" bench.mode=fwd_bwd bench.verify=true
sweep_pass paper_cp_node grid results
sweep_pass paper_cp_node ring_balanced results cp=ring cp.shard=balanced
