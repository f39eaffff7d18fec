# Sourced by the gpu_paper_*.sh scripts: one resumable pass of a preset under a time limit.
# Needs: dir (output folder), limit (seconds for the whole script, 0 = none), extra (overrides
# for every pass). sweep_pass EXPERIMENT NAME STORE [OVERRIDES...] -> $dir/STORE.jsonl
left() { if [ "$limit" -gt 0 ]; then echo $((limit - SECONDS)); else echo 1000000; fi; }
sweep_pass() {
  local experiment=$1 name=$2 store=$3 t
  shift 3
  t=$(left)
  [ "$t" -gt 5 ] || return 0
  echo "== $name ($t s left) $(date -u +%FT%TZ)"
  timeout --signal=TERM "$t" python3 -m lcab.run -m +experiment="$experiment" "$@" "${extra[@]}" \
    store="$dir/$store.jsonl" hydra.sweep.dir="$dir/sweeps/$name"
  echo "== $name exit $? after $SECONDS s"
}
