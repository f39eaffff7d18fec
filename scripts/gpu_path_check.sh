#!/usr/bin/env bash
# The same cells through an older checkout and this one, on the same GPU: a kernel sweep (two
# rounds each, alternating, so old-vs-old and new-vs-new give the run-to-run noise) and emulated
# CP cells. Used to show that a refactor of the cell path leaves the numbers where they were.
#   scripts/gpu_path_check.sh OLD_TREE OUT_DIR      (OLD_TREE: e.g. `git archive <sha> | tar -x`)
set -euo pipefail
py=${PYTHON:-python3}
old=$(cd "$1" && pwd)
out=$(mkdir -p "$2" && cd "$2" && pwd)
kernels=(-m kernel=sdpa_cudnn,cudnn,flex mask=causal,causal_document seqlen=32k bench.mode=fwd,bwd
  shape=paper resume=false)
emulate=(--kernel cudnn --world 8 --tokens-per-rank 16k --masks causal,causal_document --mode fwd
  --only ring,ulysses --extra shape=paper bench.warmup=1 bench.iters=3 bench.budget_ms=0)
for round in 1 2; do
  (cd "$old" && "$py" -m lcab.run "${kernels[@]}" "store=$out/kernels_old_$round.jsonl")
  "$py" -m lcab.run "${kernels[@]}" "store=$out/kernels_new_$round.jsonl"
done
(cd "$old" && "$py" scripts/cp_emulate_bench.py "${emulate[@]}" --store "$out/emulate_old.jsonl")
"$py" scripts/cp_emulate_bench.py "${emulate[@]}" --store "$out/emulate_new.jsonl"
