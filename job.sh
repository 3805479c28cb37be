#!/usr/bin/env bash
# Reproduces the paper's CUB-200-2011 experiment (docs/reproduction.md):
#
#   bash job.sh                                   # configs/cub.cfg -> runs/cub
#   bash job.sh --flagfile=configs/cars196.cfg    # another data set -> runs/cars196
#   bash job.sh --data_dir=/data/cub --epochs=50  # any sst_tf.train flag passes through
#
# Steps: Python environment (the current python3 if it has the requirements,
# else a .venv with requirements.txt, plus tensorflow[and-cuda] on NVIDIA
# machines); data check (one clear line naming what is missing); GPU check
# (loud warning on CPU, no refusal); training with evaluation on the test
# split; SavedModel export (when sst_tf.export exists); results table next
# to the published numbers, also written to MODEL_DIR/results.txt.
# Environment: PYTHON=/path/to/python skips the environment step.
set -euo pipefail
cd "$(dirname "$0")"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"

say() { echo "== job.sh: $*"; }
die() { echo "job.sh: error: $*" >&2; exit 1; }

# --- 1. Python environment ---------------------------------------------------------------
has_requirements() {  # fast: finds the packages without importing them
  "$1" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in
    ('tensorflow', 'keras', 'sklearn', 'scipy', 'absl', 'PIL', 'tensorflow_datasets')))" \
    >/dev/null 2>&1
}
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
  elif has_requirements python3; then
    PY=python3
  else
    say "creating .venv and installing requirements.txt (once)"
    python3 -m venv .venv
    PY=.venv/bin/python
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -r requirements.txt
    if command -v nvidia-smi >/dev/null 2>&1; then
      tf_version="$(sed -n 's/^tensorflow==\([^ ]*\).*/\1/p' requirements.txt)"
      say "NVIDIA driver found: installing tensorflow[and-cuda]==${tf_version}"
      "$PY" -m pip install -q "tensorflow[and-cuda]==${tf_version}"
    fi
  fi
fi
has_requirements "$PY" ||
  die "$PY cannot import the requirements; run: $PY -m pip install -r requirements.txt"
say "python: $(command -v "$PY" || echo "$PY")"

# --- 2. Flags ----------------------------------------------------------------------------
user_args=("$@")
config=configs/cub.cfg
has_flagfile=0
prev=""
for arg in ${user_args[@]+"${user_args[@]}"}; do
  case "$arg" in
    --flagfile=*) has_flagfile=1; config="${arg#--flagfile=}" ;;
  esac
  if [[ "$prev" == "--flagfile" ]]; then has_flagfile=1; config="$arg"; fi
  prev="$arg"
done
name="$(basename "$config" .cfg)"
args=()
[[ "$has_flagfile" == 1 ]] || args+=("--flagfile=$config")
args+=("--model_dir=runs/$name")
args+=(${user_args[@]+"${user_args[@]}"})
model_dir=""
prev=""
for arg in "${args[@]}"; do  # the last --model_dir wins, as in absl
  case "$arg" in
    --model_dir=*) model_dir="${arg#--model_dir=}" ;;
  esac
  if [[ "$prev" == "--model_dir" ]]; then model_dir="$arg"; fi
  prev="$arg"
done
say "flags: ${args[*]}"

# --- 3. Data -----------------------------------------------------------------------------
say "checking the data (counts, files, every image decodes; cached after the first run)"
if ! "$PY" -m sst_tf.train "${args[@]}" --dry_run; then
  echo "job.sh: the data is not ready (see the error above). Put the downloaded archives in" >&2
  echo "  one folder and run, e.g.:" >&2
  echo "  $PY scripts/prepare_data.py --dataset=cub --archives=DOWNLOADS --data_dir=data/cub" >&2
  echo "  (docs/reproduction.md says where to get the files)." >&2
  exit 1
fi

# --- 4. GPU ------------------------------------------------------------------------------
num_gpus="$("$PY" -c "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))" \
  2>/dev/null | tail -n 1)" || die "$PY cannot import tensorflow; run: $PY -m pip install -r requirements.txt"
if [[ "${num_gpus:-0}" == "0" ]]; then
  echo "##########################################################################" >&2
  echo "## job.sh: WARNING: TensorFlow sees NO GPU. Training InceptionV3 on CPU  ##" >&2
  echo "## takes days per run; continuing anyway.                               ##" >&2
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "## An NVIDIA driver is present: install the CUDA wheels with            ##" >&2
    echo "##   $PY -m pip install 'tensorflow[and-cuda]'  (same version)" >&2
  fi
  echo "##########################################################################" >&2
else
  say "GPUs visible to TensorFlow: ${num_gpus}"
fi

# --- 5. Train + evaluate -----------------------------------------------------------------
say "training; model dir: $model_dir (TensorBoard: tensorboard --logdir $model_dir)"
start=$(date +%s)
"$PY" -m sst_tf.train "${args[@]}"
say "training and evaluation took $(( ($(date +%s) - start) / 60 )) min"

# --- 6. Export ---------------------------------------------------------------------------
if [[ -f sst_tf/export.py ]]; then
  if [[ -d "$model_dir/export" ]]; then
    say "SavedModel already in $model_dir/export"
  else
    say "exporting the SavedModel"
    "$PY" -m sst_tf.export --model_dir="$model_dir" ||
      echo "job.sh: WARNING: the export failed (training results are kept)." >&2
  fi
else
  say "no sst_tf/export.py in this version: skipping the SavedModel export"
fi

# --- 7. Results --------------------------------------------------------------------------
"$PY" -m sst_tf.report --model_dir="$model_dir" | tee "$model_dir/results.txt"
