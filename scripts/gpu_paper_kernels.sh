#!/usr/bin/env bash
# The paper's kernel study on one GPU (issue 6), resumable in slices:
#   scripts/gpu_paper_kernels.sh [SECONDS [OVERRIDES...]]
# 1. the numerics pass: every kernel x mask at 1K, fwd_bwd, verify=true  -> $DIR/verify.jsonl
# 2. the timing sweep: +experiment=paper_kernels as written              -> $DIR/results.jsonl
# Both resume from their store, so a slice cut off by SECONDS (default: no limit) continues
# where it stopped when the script is run again. DIR defaults to outputs/paper_kernels.
# OVERRIDES go to both passes, e.g. kernel=flex to run one kernel's column. The H100 run took
# three device calls, one kernel group each (docs/results/h100/paper_kernels/README.md).
set -u
dir=${LCAB_PK_DIR:-outputs/paper_kernels}
limit=${1:-0}
shift $(($# > 0 ? 1 : 0))
extra=("$@")
mkdir -p "$dir"
source "$(dirname "$0")/_sweep.sh"
sweep_pass paper_kernels verify verify seqlen=1k bench.mode=fwd_bwd bench.verify=true
sweep_pass paper_kernels results results
