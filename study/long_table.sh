#!/usr/bin/env bash
# The long-budget table (docs/results.md): every loss trained to its validation
# plateau on cross_script (50 images per class), many_classes (5 per class) and
# digits, seeds 0 and 1, and cross_script from the pretrained backbone.
# Resumable: rerun the same command after an interruption; finished runs are
# kept, an unfinished one continues from its last evaluation.
#
#   bash study/long_table.sh SUITE_DIR OUT_DIR [SEEDS]     # e.g. data/suite runs/long 0,1
#   ONLY=arcface,cosface bash study/long_table.sh ...       # those arms only
#
# One job on one core (taskset -c 1 bash study/long_table.sh ...); about 9
# CPU-hours for both seeds on the machine of 2026-12-07.
set -euo pipefail
suite=${1:?usage: long_table.sh SUITE_DIR OUT_DIR [SEEDS]}
out=${2:?usage: long_table.sh SUITE_DIR OUT_DIR [SEEDS]}
seeds=${3:-0,1}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
arms=(
  --variant=sst:loss=sst
  --variant=sst_paper:loss=sst,normalize=false,neighborhoods=original
  --variant=contrastive:loss=contrastive
  --variant=triplet_semihard:loss=triplet_semihard
  --variant=multi_similarity:loss=multi_similarity
  --variant=npairs:loss=npairs
  --variant=lifted_struct:loss=lifted_struct
  --variant=proxy_anchor:loss=proxy_anchor
  --variant=circle:loss=circle
  --variant=supcon:loss=supcon
  --variant=ntxent:loss=ntxent
  --variant=arcface:loss=arcface
  --variant=cosface:loss=cosface
  --variant=subcenter_arcface:loss=subcenter_arcface
)
# ONLY=name,name,... runs those arms alone (e.g. a loss whose defaults changed,
# into another OUT_DIR; later files of --from_json replace its older runs).
if [ -n "${ONLY:-}" ]; then
  kept=()
  for a in "${arms[@]}"; do
    name=${a#--variant=}; name=${name%%:*}
    [[ ",$ONLY," == *",$name,"* ]] && kept+=("$a")
  done
  [ ${#kept[@]} -gt 0 ] || { echo "long_table.sh: ONLY=$ONLY names no arm" >&2; exit 2; }
  arms=("${kept[@]}")
fi
# Evaluations every ~6,000 image presentations, patience 5 evaluations, a cap of
# ~3 x 10^5 presentations (about 17 times the 30-second suite's budget).
common=(--threads=1 --plateau_patience=5 "${arms[@]}")
for seed in ${seeds//,/ }; do
  "$python" "$here/compare.py" --flagfile="$here/../configs/glyphs.cfg" "${common[@]}" \
    --seeds="$seed" --benchmarks="cross_script=$suite/cross_script" \
    --compare_eval_every=2 --epochs=100 --out_dir="$out/cross_script"
  "$python" "$here/compare.py" --flagfile="$here/../configs/glyphs.cfg" "${common[@]}" \
    --seeds="$seed" --benchmarks="many_classes=$suite/many_classes" \
    --compare_eval_every=6 --epochs=300 --out_dir="$out/many_classes"
  "$python" "$here/compare.py" --flagfile="$here/../configs/digits.cfg" "${common[@]}" \
    --seeds="$seed" --benchmark_name=digits \
    --compare_eval_every=12 --epochs=600 --out_dir="$out/digits"
  if [ ! -f "$suite/small_cnn_han.weights.h5" ]; then
    "$python" "$here/pretrain.py" --data_dir="$suite/pretrain" \
      --output="$suite/small_cnn_han.weights.h5"
  fi
  "$python" "$here/compare.py" --flagfile="$here/../configs/glyphs.cfg" "${common[@]}" \
    --seeds="$seed" --benchmarks="cross_script=$suite/cross_script" --noscratch \
    --pretrained_benchmarks=cross_script --suite_weights="$suite/small_cnn_han.weights.h5" \
    --compare_eval_every=2 --epochs=100 --out_dir="$out/cross_script_pretrained"
done
