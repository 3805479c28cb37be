#!/usr/bin/env bash
# Defaults retested at the long budget (docs/results.md): the validation arms
# that decided a default on 30-second runs (study/docs/sst_study.md sections
# 13-17), trained to the validation plateau on cross_script and many_classes
# as in study/long_table.sh. The defaults' own runs are the long table's
# (same seeds, same rule: a plateau run's length is counted in evaluations,
# not seconds); the decision compares validation MAP@R (val/test, training
# classes only), never the test classes.
# Resumable: rerun the same command after an interruption.
#
#   bash study/long_defaults.sh SUITE_DIR OUT_DIR [SEEDS]     # e.g. data/suite runs/defaults 0,1
set -euo pipefail
suite=${1:?usage: long_defaults.sh SUITE_DIR OUT_DIR [SEEDS]}
out=${2:?usage: long_defaults.sh SUITE_DIR OUT_DIR [SEEDS]}
seeds=${3:-0,1}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
arms=(
  --variant=sst_m4:loss=sst,members_per_class=4            # SST's batch before section 15
  --variant=sst_s32:loss=sst,sst_scale=32                  # the runner-up of section 16
  --variant=semihard_m02:loss=triplet_semihard,margin=0.2  # FaceNet's margin (section 16)
  --variant=contrastive_local:loss=contrastive,sampler=local  # before section 15
  --variant=pa_lr1:loss=proxy_anchor,loss_lr_multiplier=1  # before section 17
  --variant=lifted_m2:loss=lifted_struct,margin=2.0        # the runner-up of section 16
)
common=(--threads=1 --plateau_patience=5 "${arms[@]}")
# shellcheck source=study/plateau_benchmark.sh
source "$here/plateau_benchmark.sh"
for seed in ${seeds//,/ }; do
  plateau_benchmark cross_script "$seed"
  plateau_benchmark many_classes "$seed"
done
