#!/usr/bin/env bash
# Run the paper's experiments side by side (one process each, sharing the GPU or the CPU), each for at most
# $1 seconds; a run that stops early resumes from its checkpoint on the next call. Outputs go to runs/<name>/.
#   experiments/run_all.sh 540 [name ...]
set -u
limit=${1:-540}; shift || true
names=${*:-parity_xlstm01 parity_xlstm10 parity_xlstm11 mqar_xlstm10 mqar_xlstm01}
for name in $names; do
  mode="--overwrite"; [ -f "runs/$name/checkpoint.pt" ] && mode="--resume"  # continue a run, else start over
  timeout "$limit" python3 -m xlstm_engine.cli train "experiments/$name.yaml" "training.out_dir=runs/$name" \
    training.progress_bar=false training.checkpoint_every=500 dataset.kwargs.count.validation=2048 $mode \
    > "runs/$name.log" 2>&1 &
done
wait
for name in $names; do echo "== $name: $(tail -n 1 "runs/$name/metrics.jsonl" 2>/dev/null | cut -c1-160)"; done
