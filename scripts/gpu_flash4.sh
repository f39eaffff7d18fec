#!/usr/bin/env bash
# Issue 15 (FlashAttention-4) on nvidia-h200-x2, resumable like gpu_paper_kernels.sh:
#   scripts/gpu_flash4.sh [SECONDS [OVERRIDES...]]
# 1. numerics, one GPU: flash4 x the 12 paper masks at 1K, fwd_bwd, verify=true  -> verify.jsonl
# 2. the issue's lines: flash4 and flash3, cp=ring mask=causal_doc, 2 GPUs, 16k,32k -> issue.jsonl
# 3. numerics, 2 GPUs: flash4 as the step kernel of ulysses, ring, ring_allgather, usp and
#    double_ring on the 12 masks, 1K per GPU, fwd_bwd                          -> verify_cp.jsonl
# 4. the CP grid at 16K tokens per GPU (S = 32K) and flash4 on one GPU at S = 32K -> cp.jsonl
# 5. the paper's kernel sweep with flash4 (12 masks x 1K..48K x fwd/bwd)          -> results.jsonl
# DIR: $LCAB_FA4_DIR (default outputs/flash4). LCAB_FA4_ONLY=NAME runs only the passes of that
# name (verify, issue, verify_cp, grid, baseline, results). Needs flash-attn-4 (../shared/tools/gpu-wheels
# --fa4 says how to install it); FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=1 keeps compiled kernels.
set -u
dir=${LCAB_FA4_DIR:-outputs/flash4}
limit=${1:-0}
shift $(($# > 0 ? 1 : 0))
extra=("$@")
mkdir -p "$dir"
export FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=${FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED:-1}
source "$(dirname "$0")/_sweep.sh"
only=${LCAB_FA4_ONLY:-}
want() { [ -z "$only" ] || [ "$only" = "$1" ]; }
masks=full,causal,sliding_window,sliding_window_causal,full_document,causal_document,share_question,causal_blockwise,prefix_lm_causal,prefix_lm_document,global_sliding_window,block_causal_document
cp4=ulysses,ring,ring_allgather,usp,double_ring
want verify && sweep_pass paper_kernels verify verify kernel=flash4 mask=$masks seqlen=1k bench.mode=fwd_bwd bench.verify=true
want issue && for k in flash4 flash3; do  # the issue's line, verbatim but for the store
  echo "== issue $k $(date -u +%FT%TZ)"
  python3 -m lcab.run kernel=$k cp=ring mask=causal_doc cluster.nproc=2 -m seqlen=16k,32k store="$dir/issue.jsonl" \
    hydra.sweep.dir="$dir/sweeps/issue_$k"
  echo "== issue $k exit $?"
done
want verify_cp && sweep_pass paper_cp_node verify_cp verify_cp kernel=flash4 cp=$cp4 mask=$masks cluster.nproc=2 "seqlen=\${lcab_per_gpu:1k}" bench.mode=fwd_bwd bench.verify=true
want grid && sweep_pass paper_cp_node grid cp kernel=flash4 cp=$cp4 cluster.nproc=2
want baseline && sweep_pass paper_cp_node baseline cp kernel=flash4 cp=none cluster.nproc=1 seqlen=32k
want results && sweep_pass paper_kernels results results kernel=flash4
