#!/usr/bin/env bash
# GPU check (< 8 minutes on one H100/H200-class GPU with network access):
#   bash scripts/gpu_check.sh [OUT_DIR]
# 1. installs the pinned requirements + tensorflow[and-cuda];
# 2. runs the benchmark sections kmeans, step (InceptionV3 at 224, batch 200),
#    refresh and input on the GPU, into OUT_DIR/BENCHMARKS.md;
# 3. trains a CUB-shaped run on synthetic JPEGs (100 classes x 20 images,
#    InceptionV3 at 224, batch 200, SST + local sampling, k-means on the GPU)
#    in bfloat16 and in float32, printing images/s and refresh times.
# Every part has its own time limit so one slow part cannot eat the others.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT"
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s)
stamp() { echo "=== [$(( $(date +%s) - start )) s] $*"; }

stamp "install"
python3 -m pip install -q -r requirements.txt "tensorflow[and-cuda]==2.21.0" 2>&1 | tail -3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
python3 -c "import tensorflow as tf; g = tf.config.list_physical_devices('GPU'); \
print('TensorFlow', tf.__version__, 'GPUs:', g); assert g, 'no GPU visible to TensorFlow'" \
  || { echo "TensorFlow sees no GPU: stopping"; exit 1; }

stamp "benchmark sections kmeans, step, input, refresh"
cp BENCHMARKS.md "$OUT/BENCHMARKS.md" 2>/dev/null || true
timeout 150 python3 scripts/benchmark.py --output="$OUT/BENCHMARKS.md" \
  --sections=kmeans,step --kmeans_repeats=3 --step_repeats=10 2>&1 | grep -v "^W0000\|^I0000"
timeout 60 python3 scripts/benchmark.py --output="$OUT/BENCHMARKS.md" \
  --sections=input --input_n=1000 2>&1 | grep -v "^W0000\|^I0000"
timeout 90 python3 scripts/benchmark.py --output="$OUT/BENCHMARKS.md" --sections=refresh \
  --refresh_backbone=inception_v3 --refresh_size=224 --refresh_sample=2000 \
  --refresh_kmeans=tf,sklearn 2>&1 | grep -v "^W0000\|^I0000"

stamp "CUB-shaped training, bfloat16 then float32"
timeout 200 python3 scripts/gpu_train_check.py --out="$OUT/train" \
  --precisions=bfloat16,none --epochs=3 2>&1 | grep -v "^W0000\|^I0000" | tee "$OUT/train.log"
rm -rf "$OUT/train/train" "$OUT/train/test"  # the synthetic JPEGs

stamp "summary"
grep -h "Overhead ratio" "$OUT/BENCHMARKS.md" || true
grep -h "images/s" "$OUT/train.log" || true
stamp "done"
