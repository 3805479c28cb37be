#!/usr/bin/env bash
# Reproduce the paper on CUB-200-2011: InceptionV3 + SST loss + local sampling.
#   bash job.sh [extra flags, e.g. --data_dir=/path/to/CUB_200_2011 --model_dir=runs/x]
# Flags after job.sh override configs/cub.cfg (later flags win).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
MODEL_DIR=${MODEL_DIR:-runs/cub}

if ! "$PYTHON" -c "import tensorflow" 2>/dev/null; then
  echo "job.sh: installing requirements.txt" >&2
  "$PYTHON" -m pip install -r requirements.txt
fi
if ! "$PYTHON" -c "import tensorflow as tf, sys; sys.exit(not tf.config.list_physical_devices('GPU'))" 2>/dev/null; then
  echo "job.sh: WARNING: no GPU found; InceptionV3 training on CUB will be very slow on CPU." >&2
fi
# sst_tf.train checks the data set and --data_dir and names what is missing.
exec "$PYTHON" -m sst_tf.train --flagfile=configs/cub.cfg --model_dir="$MODEL_DIR" "$@"
