"""Embeds image files with an exported SavedModel.

    python -m sst_tf.embed --export_dir=runs/digits/export \
        --images='photos/**/*.jpg' --output=embeddings.npz

``--images`` is a folder (searched recursively for .jpg/.jpeg/.png) or a glob.
The output ``.npz`` holds ``paths`` (absolute, str), ``embeddings``
(float32 ``[N, d]``), ``export_dir`` and ``failed`` (paths that could not be
read or decoded; they are logged and skipped, never fatal).
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
from absl import app, flags, logging

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_images(images: str) -> list[str]:
    """Absolute paths of the image files named by a folder or a glob, sorted.

    Raises:
      FileNotFoundError: naming ``images`` when it matches no image file.
    """
    if os.path.isdir(images):
        found = []
        for root, dirs, files in os.walk(images):
            dirs.sort()
            found.extend(
                os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)
            )
    elif os.path.isfile(images):
        found = [images]
    else:
        found = [p for p in glob.glob(images, recursive=True) if os.path.isfile(p)]
    found = sorted(os.path.abspath(p) for p in found)
    if not found:
        raise FileNotFoundError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found for --images={images}"
        )
    return found


class Embedder:
    """Calls an sst_tf export's ``serve_jpeg`` signature on encoded images."""

    def __init__(self, export_dir: str):
        """Loads the SavedModel in ``export_dir``."""
        import tensorflow as tf

        from sst_tf.export import load_export_info

        self.info = load_export_info(export_dir)
        self.export_dir = os.path.abspath(export_dir)
        self._tf = tf
        self._loaded = tf.saved_model.load(export_dir)
        self._fn = self._loaded.signatures["serve_jpeg"]
        self.embedding_dim = int(self.info["embedding_dim"])

    def __call__(self, encoded: Sequence[bytes]) -> np.ndarray:
        """Embeds a list of JPEG/PNG byte strings; ``[len(encoded), d]`` float32."""
        out = self._fn(images=self._tf.constant(list(encoded), dtype=self._tf.string))
        return out["embeddings"].numpy().astype(np.float32)


def embed_files(
    embed_fn: Callable[[Sequence[bytes]], np.ndarray],
    paths: Sequence[str],
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Embeds files in batches, skipping the ones that cannot be read or decoded.

    Args:
      embed_fn: maps a list of encoded images to ``[n, d]`` embeddings and
        raises on undecodable input.
      paths: image files.
      batch_size: images per call of ``embed_fn``.
      progress: show a progress bar on stderr.

    Returns:
      ``(kept_paths, embeddings [len(kept_paths), d], failed)`` with ``failed``
      a list of ``(path, reason)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    kept, chunks, failed = [], [], []
    bar = _progress_bar(len(paths)) if progress else None
    for start in range(0, len(paths), batch_size):
        batch_paths, batch_bytes = [], []
        for p in paths[start : start + batch_size]:
            try:
                with open(p, "rb") as f:
                    batch_bytes.append(f.read())
                batch_paths.append(p)
            except OSError as e:
                failed.append((p, f"unreadable: {e.strerror or e}"))
        if batch_bytes:
            try:
                chunks.append(np.asarray(embed_fn(batch_bytes), np.float32))
                kept.extend(batch_paths)
            except Exception:  # noqa: BLE001 - find the bad files one by one
                for p, b in zip(batch_paths, batch_bytes, strict=True):
                    try:
                        chunks.append(np.asarray(embed_fn([b]), np.float32))
                        kept.append(p)
                    except Exception as e:  # noqa: BLE001
                        failed.append((p, f"not a decodable JPEG/PNG ({type(e).__name__})"))
        if bar is not None:
            bar.update(min(start + batch_size, len(paths)))
    for p, reason in failed:
        logging.warning("skipped %s: %s", p, reason)
    if failed:
        logging.warning("skipped %d of %d files", len(failed), len(paths))
    embeddings = np.concatenate(chunks, 0) if chunks else np.zeros((0, 0), np.float32)
    return kept, embeddings, failed


def _progress_bar(total: int):
    import keras

    return keras.utils.Progbar(total, unit_name="image")


def save_index(
    output: str,
    paths: Sequence[str],
    embeddings: np.ndarray,
    export_dir: str = "",
    failed: Sequence[str] = (),
) -> None:
    """Writes an embeddings index ``.npz`` atomically (temporary file + rename)."""
    out_dir = os.path.dirname(os.path.abspath(output))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".embeddings-", suffix=".npz", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                paths=np.asarray(list(paths), dtype=str),
                embeddings=np.asarray(embeddings, np.float32),
                export_dir=np.asarray(export_dir),
                failed=np.asarray(list(failed), dtype=str),
            )
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_index(path: str) -> dict[str, np.ndarray | str]:
    """Reads an index written by `save_index`.

    Raises:
      FileNotFoundError / ValueError: naming the file when missing or malformed.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--index={path} does not exist")
    with np.load(path, allow_pickle=False) as z:
        missing = {"paths", "embeddings"} - set(z.files)
        if missing:
            raise ValueError(f"--index={path} is not an sst_tf index (missing {sorted(missing)})")
        return {
            "paths": z["paths"],
            "embeddings": z["embeddings"].astype(np.float32),
            "export_dir": str(z["export_dir"]) if "export_dir" in z.files else "",
        }


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this entry point's flags."""
    flags.DEFINE_string("export_dir", None, "SavedModel folder written by sst_tf.export.")
    flags.DEFINE_string("images", None, "Folder (recursive) or glob of JPEG/PNG files.")
    flags.DEFINE_string("output", "embeddings.npz", "Where to write the .npz index.")
    flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")


def main(argv: Sequence[str]) -> int:
    """Entry point."""
    del argv
    for name in ("export_dir", "images"):
        if not getattr(FLAGS, name):
            print(f"sst_tf.embed: error: --{name} is required", file=sys.stderr)
            return 2
    if FLAGS.batch_size < 1:
        print(
            f"sst_tf.embed: error: --batch_size must be >= 1, got {FLAGS.batch_size}",
            file=sys.stderr,
        )
        return 2
    try:
        paths = list_images(FLAGS.images)
        embedder = Embedder(FLAGS.export_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"sst_tf.embed: error: {e}", file=sys.stderr)
        return 2
    logging.info("embedding %d files with %s", len(paths), FLAGS.export_dir)
    kept, emb, failed = embed_files(embedder, paths, FLAGS.batch_size)
    if not kept:
        print(
            f"sst_tf.embed: error: none of the {len(paths)} files could be decoded", file=sys.stderr
        )
        return 1
    save_index(FLAGS.output, kept, emb, embedder.export_dir, [p for p, _ in failed])
    print(
        f"wrote {len(kept)} embeddings of size {emb.shape[1]} to {FLAGS.output}"
        + (f"; skipped {len(failed)} unreadable files" if failed else "")
    )
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
