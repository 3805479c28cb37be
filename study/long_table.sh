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
# patience 5 evaluations; the cap is about 17 times the 30-second suite's budget.
common=(--threads=1 --plateau_patience=5 "${arms[@]}")
# shellcheck source=study/plateau_benchmark.sh
source "$here/plateau_benchmark.sh"
for seed in ${seeds//,/ }; do
  for name in cross_script many_classes digits cross_script_pretrained; do
    plateau_benchmark "$name" "$seed"
  done
done
