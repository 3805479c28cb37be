"""How much TensorFlow's and PIL's JPEG decoders differ, in pixels and in embeddings.

    python scripts/jpeg_decoders.py --export_dir=runs/digits/export

For the two JPEG photos bundled with scikit-learn, as stored and re-encoded by
PIL at quality 75 and 95, prints the largest and mean per-pixel difference of
the two decodings and the relative difference ``|e_tf - e_pil| / |e_pil|`` of
their embeddings: ``e_tf`` from the export's ``serve_jpeg`` (TensorFlow
decodes) and ``e_pil`` from ``serve_images`` on PIL's pixels.
"""

from __future__ import annotations

import glob
import io
import os
import sys

import numpy as np
import sklearn.datasets
from absl import flags
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sst_tf import cli  # noqa: E402

flags.DEFINE_string("export_dir", None, "An sst_tf export.")
FLAGS = flags.FLAGS


def samples() -> list[tuple[str, bytes]]:
    """(name, JPEG bytes): scikit-learn's sample photos, as stored and re-encoded."""
    folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.jpg"))):
        with open(path, "rb") as f:
            raw = f.read()
        out.append((os.path.basename(path), raw))
        image = Image.open(io.BytesIO(raw)).convert("RGB")
        for quality in (75, 95):
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=quality)
            out.append((f"{os.path.basename(path)} (quality {quality})", buf.getvalue()))
    return out


@cli.entry_point("jpeg_decoders.py", tensorflow=True, quiet_info=True)
def main(argv) -> int:
    """Prints one line per sample image."""
    import tensorflow as tf

    if not FLAGS.export_dir:
        raise cli.UsageError("--export_dir is required")
    if not os.path.isfile(os.path.join(FLAGS.export_dir, "saved_model.pb")):
        raise cli.UsageError(f"--export_dir={FLAGS.export_dir} holds no saved_model.pb")
    signatures = tf.saved_model.load(FLAGS.export_dir).signatures
    for name, raw in samples():
        tf_pixels = tf.io.decode_jpeg(raw, channels=3).numpy().astype(np.int32)
        pil_pixels = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).astype(np.int32)
        diff = np.abs(tf_pixels - pil_pixels)
        e_tf = signatures["serve_jpeg"](images=tf.constant([raw]))["embeddings"].numpy()[0]
        e_pil = signatures["serve_images"](
            images=tf.constant(pil_pixels[None], tf.float32))["embeddings"].numpy()[0]
        rel = float(np.linalg.norm(e_tf - e_pil) / np.linalg.norm(e_pil))
        print(f"{name}: pixels max |diff| {diff.max()}, mean {diff.mean():.2f}; "
              f"embeddings differ by {100 * rel:.2f}%")
    return 0


if __name__ == "__main__":
    cli.run(main)
