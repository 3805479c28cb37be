"""Short CUB-shaped training run on synthetic JPEGs; prints images/s per epoch.

Used by `scripts/gpu_check.sh` on a GPU machine:

  python scripts/gpu_train_check.py --out=/tmp/gpu_check --precisions=bfloat16,none

Writes `--classes` x `--per_class` synthetic JPEGs (500x375, like CUB photos),
trains InceptionV3 (random init: no weight download) at 224 with the SST loss
and local sampling for `--epochs` epochs per precision, and prints per epoch:
training images/s (tf.data + steps), refresh seconds (embedding pass +
k-means + batch building), and the loss. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


def write_jpegs(folder: Path, classes: int, per_class: int, seed: int) -> tuple[list, np.ndarray]:
    """Smooth random colour JPEGs, one tint per class so classes are learnable."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    tints = rng.integers(0, 256, size=(classes, 3))
    for c in range(classes):
        for j in range(per_class):
            small = (0.5 * rng.integers(0, 256, size=(8, 8, 3)) + 0.5 * tints[c]).astype(np.uint8)
            p = folder / f"{c:03d}_{j:03d}.jpg"
            Image.fromarray(small).resize((500, 375), Image.BILINEAR).save(p, quality=90)
            paths.append(str(p))
            labels.append(c)
    return paths, np.array(labels, np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=tempfile.mkdtemp(prefix="gpu_check_"))
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--per_class", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=200)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--precisions", default="bfloat16,none")
    parser.add_argument("--strategy", default="default")
    parser.add_argument("--kmeans", default="tf")
    parser.add_argument("--jit_compile", action="store_true")
    args = parser.parse_args()

    import tensorflow as tf

    from sst_tf import data as data_lib
    from sst_tf import distribute
    from sst_tf.trainer import TrainConfig, Trainer

    print("GPUs:", tf.config.list_physical_devices("GPU"), flush=True)
    strategy = distribute.make_strategy(args.strategy)
    out = Path(args.out)
    t0 = time.perf_counter()
    train_paths, train_labels = write_jpegs(out / "train", args.classes, args.per_class, 0)
    test_paths, test_labels = write_jpegs(out / "test", args.classes, 5, 1)
    names = tuple(str(c) for c in range(args.classes))
    ds = data_lib.Dataset("synthetic_cub",
                          data_lib.Split(train_labels, names, paths=tuple(train_paths)),
                          data_lib.Split(test_labels, names, paths=tuple(test_paths)))
    print(f"wrote {len(train_paths) + len(test_paths)} JPEGs in {time.perf_counter() - t0:.0f} s",
          flush=True)
    results = {}
    for precision in args.precisions.split(","):
        cfg = TrainConfig(model_dir=str(out / f"run_{precision}"), backbone="inception_v3",
                          pretrained=False, image_size=args.image_size,
                          resize_size=round(args.image_size * 256 / 224),
                          batch_size=args.batch_size, epochs=args.epochs, progress=False,
                          mixed_precision=precision, kmeans=args.kmeans,
                          jit_compile=args.jit_compile, deterministic=not args.jit_compile,
                          strategy=args.strategy)
        trainer = Trainer(cfg, dataset=ds, strategy=strategy)
        epochs = []
        for epoch in range(args.epochs):
            s = trainer.train_epoch(epoch, refresh=True)
            epochs.append({k: float(s[k]) for k in ("loss", "images_per_second", "train_seconds",
                                                     "sampler/refresh_seconds")})
            print(f"[{precision}] epoch {epoch + 1}: loss {s['loss']:.4f}, "
                  f"{s['images_per_second']:.0f} images/s (train), refresh "
                  f"{s['sampler/refresh_seconds']:.1f} s, train {s['train_seconds']:.1f} s",
                  flush=True)
        t1 = time.perf_counter()
        emb = trainer.embed(ds.train)
        embed_rate = len(ds.train) / (time.perf_counter() - t1)
        print(f"[{precision}] inference pass: {embed_rate:.0f} images/s", flush=True)
        results[precision] = {"epochs": epochs, "embed_images_per_second": embed_rate,
                              "finite": bool(np.isfinite(emb).all())}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
