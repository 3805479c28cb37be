#!/usr/bin/env bash
# The 30-second suite table (docs/results.md): every loss in its registry
# defaults for 30 CPU-seconds (digits 15) on the four benchmarks from scratch,
# on cross_script from the pretrained backbone, and on digits, seeds 0, 1, 2.
# Resumable: rerun the same command; finished runs are kept.
#
#   bash study/short_table.sh SUITE_DIR OUT_DIR [SEEDS]     # e.g. data/suite runs/short 0,1,2
#   ONLY=circle,supcon bash study/short_table.sh ...        # those losses only
#   EXTRA_FLAGS="--budget_seconds=5" bash study/short_table.sh ...  # after every call's flags
#
# One job per core (taskset -c 0 ... ONLY=<half of the losses>, taskset -c 1
# ... the other half); about 4.5 CPU-minutes per loss and seed (13 for three) on the machine
# of 2026-12-07.
set -euo pipefail
usage="usage: short_table.sh SUITE_DIR OUT_DIR [SEEDS]"
suite=${1:?$usage}
out=${2:?$usage}
seeds=${3:-0,1,2}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
losses=(sst contrastive triplet triplet_semihard triplet_hard triplet_hard_soft lifted_struct
        npairs pairwise_contrastive multi_similarity proxy_anchor circle supcon ntxent arcface
        cosface subcenter_arcface)
if [ -n "${ONLY:-}" ]; then
  kept=()
  for l in "${losses[@]}"; do [[ ",$ONLY," == *",$l,"* ]] && kept+=("$l"); done
  [ ${#kept[@]} -gt 0 ] || { echo "short_table.sh: ONLY=$ONLY names no loss" >&2; exit 2; }
  losses=("${kept[@]}")
fi
arms=()
for l in "${losses[@]}"; do arms+=(--variant="$l:loss=$l"); done
if [ ! -f "$suite/small_cnn_han.weights.h5" ]; then
  "$python" "$here/pretrain.py" --data_dir="$suite/pretrain" \
    --output="$suite/small_cnn_han.weights.h5"
fi
common=(--threads=1 --budget_clock=cpu --seeds="$seeds" "${arms[@]}")
read -r -a extra <<< "${EXTRA_FLAGS:-}"  # last: they replace the flags before them
glyphs=(--flagfile="$here/../configs/glyphs.cfg" --budget_seconds=30)
scratch=
for name in cross_script within_script typeface many_classes; do
  scratch+="${scratch:+,}$name=$suite/$name"
done
"$python" "$here/compare.py" "${glyphs[@]}" "${common[@]}" --benchmarks="$scratch" \
  --out_dir="$out/scratch" "${extra[@]}"
"$python" "$here/compare.py" "${glyphs[@]}" "${common[@]}" \
  --benchmarks="cross_script=$suite/cross_script" --noscratch \
  --pretrained_benchmarks=cross_script --suite_weights="$suite/small_cnn_han.weights.h5" \
  --out_dir="$out/pretrained" "${extra[@]}"
"$python" "$here/compare.py" --flagfile="$here/../configs/digits.cfg" --benchmark_name=digits \
  --budget_seconds=15 "${common[@]}" --out_dir="$out/digits" "${extra[@]}"
