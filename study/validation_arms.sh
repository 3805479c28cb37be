#!/usr/bin/env bash
# Validation arms of the six softmax-contrastive and classification-margin
# losses at the 30-second budget: each loss's registry default beside six
# changes from it (the batch shape, the margin or scale, the sampler, the
# learning rate, the head), on the four `val/` splits (training classes only),
# from scratch, seeds 0 and 1, one evaluation after training: the protocol
# that chose the other losses' defaults (study/docs/sst_study.md, sections
# 15-17). Resumable: rerun the same command; finished runs are kept.
#
#   bash study/validation_arms.sh SUITE_DIR OUT_DIR LOSS[,LOSS...]
#   taskset -c 0 bash study/validation_arms.sh data/suite runs/val circle,supcon,ntxent
#
# About 40 minutes per loss on one core of the machine of 2026-12-07.
set -euo pipefail
usage="usage: validation_arms.sh SUITE_DIR OUT_DIR LOSS[,LOSS...]"
suite=${1:?$usage}
out=${2:?$usage}
losses=${3:?$usage}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
arms_of() {
  case $1 in
    circle) echo circle:loss=circle circle_m025:loss=circle,circle_m=0.25 \
      circle_g256:loss=circle,circle_gamma=256 circle_g32:loss=circle,circle_gamma=32 \
      circle_k5:loss=circle,samples_per_class=5 circle_bs160:loss=circle,batch_size=160 \
      circle_local:loss=circle,sampler=local ;;
    supcon) echo supcon:loss=supcon supcon_t007:loss=supcon,temperature=0.07 \
      supcon_t02:loss=supcon,temperature=0.2 supcon_t05:loss=supcon,temperature=0.5 \
      supcon_k5:loss=supcon,samples_per_class=5 supcon_bs160:loss=supcon,batch_size=160 \
      supcon_local:loss=supcon,sampler=local ;;
    ntxent) echo ntxent:loss=ntxent ntxent_t01:loss=ntxent,temperature=0.1 \
      ntxent_t02:loss=ntxent,temperature=0.2 ntxent_t05:loss=ntxent,temperature=0.5 \
      ntxent_k5:loss=ntxent,samples_per_class=5 ntxent_bs160:loss=ntxent,batch_size=160 \
      ntxent_local:loss=ntxent,sampler=local ;;
    arcface|cosface|subcenter_arcface)
      local n=$1 short=${1%%_*} m
      case $1 in cosface) m=m02:loss=$n,margin=0.2 ;;
                 *) m=m03:loss=$n,margin=17.2 ;; esac  # 0.3 rad
      echo "$n:loss=$n ${short}_s30:loss=$n,margin_scale=30 ${short}_$m" \
        "${short}_cb:loss=$n,sampler=class_balanced ${short}_plr10:loss=$n,proxy_lr_multiplier=10" \
        "${short}_lr025:loss=$n,loss_lr_multiplier=0.25"
      case $1 in subcenter_arcface) echo "${short}_k2:loss=$n,sub_centers=2" ;;
                 *) echo "${short}_nobn:loss=$n,embedding_batchnorm=false" ;; esac ;;
    *) echo "validation_arms.sh: no arms for loss $1" >&2; return 2 ;;
  esac
}
splits=
for name in cross_script within_script typeface many_classes; do
  splits+="${splits:+,}$name=$suite/$name/val"
done
for loss in ${losses//,/ }; do
  arms=()
  for a in $(arms_of "$loss"); do arms+=(--variant="$a"); done
  "$python" "$here/compare.py" --flagfile="$here/../configs/glyphs.cfg" --threads=1 \
    --budget_clock=cpu --budget_seconds=30 --compare_eval_every=100 --benchmarks="$splits" \
    --seeds=0,1 "${arms[@]}" --out_dir="$out/$loss"
done
