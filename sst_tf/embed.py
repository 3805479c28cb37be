"""Embeds image files with an exported SavedModel.

    python -m sst_tf.embed --export_dir=runs/digits/export \
        --images='photos/**/*.jpg' --output=embeddings.npz

``--images`` is a folder (searched recursively for the image types training
reads: .jpg, .jpeg, .png, .bmp, .gif, .webp), a single file or a glob. The
output ``.npz`` holds ``paths`` (absolute, str), ``embeddings`` (float32
``[N, d]``), ``export_dir``, ``batch_size`` (images per forward pass, which
``sst_tf.search`` reuses for its queries), ``failed`` (paths that could not be
read or decoded; they are logged and skipped, never fatal) and ``format``. An
existing ``--output`` is replaced only when it is an index written by this
command.

An image's embedding does not depend on the images it shares a batch with:
every forward pass has exactly ``batch_size`` images (a short last batch is
padded with copies of its first image and the copies' rows dropped), so each
image goes through the same kernels, with the same shapes, wherever it sits,
and TensorFloat-32 is turned off so GPU matrix products are full float32. A
query that is in the index therefore embeds to its own row (bit for bit on the
same machine and thread count, to float32 round-off elsewhere).
"""

from __future__ import annotations

import glob
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence

import numpy as np
from absl import flags, logging

from sst_tf import cli
from sst_tf.datasets.common import IMAGE_EXTENSIONS
from sst_tf.outputs import check_output_file

INDEX_FORMAT = "sst_tf.embeddings/1"
DEFAULT_BATCH_SIZE = 64  # also what an index that records no batch_size was made with
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def list_images(images: str, flag: str = "--images") -> list[str]:
    """Absolute paths of the image files named by a folder, a file or a glob, sorted.

    Args:
      images: a folder (searched recursively for `IMAGE_EXTENSIONS`), an
        image file or a glob.
      flag: how messages name the argument (``--images``, ``--query``).

    Raises:
      FileNotFoundError: naming ``flag`` when it matches no image file.
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
        where = "in the folder" if os.path.isdir(images) else "matching"
        raise FileNotFoundError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}) {where} {flag}={images}"
        )
    return found


class UndecodableImagesError(ValueError):
    """Some of the images given to `Embedder` cannot be decoded.

    Attributes:
      reasons: ``{position in the input: reason}`` of the undecodable images.
    """

    def __init__(self, reasons: dict[int, str]):
        super().__init__(f"{len(reasons)} undecodable images at positions {sorted(reasons)}")
        self.reasons = reasons


class Embedder:
    """Calls an sst_tf export's ``serve_jpeg`` signature on encoded images.

    Every call of the signature gets exactly ``batch_size`` images, so an
    image's embedding is the same whatever images it is embedded with
    (kernels of matrix products and convolutions are chosen, and sum in an
    order chosen, by the batch's shape; on a GPU TensorFloat-32 also rounds
    inputs to 10 bits for some shapes only).
    """

    def __init__(self, export_dir: str, name: str | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE):
        """Loads the SavedModel in ``export_dir``.

        Turns TensorFloat-32 off for the process
        (``tf.config.experimental.enable_tensor_float_32_execution(False)``):
        embeddings are computed in full float32.

        Args:
          export_dir: an sst_tf export.
          name: how messages name the folder (default ``--export_dir``).
          batch_size: images per forward pass. Embeddings to be compared
            (an index and its queries) must come from the same batch size:
            different ones agree only to float32 round-off, or worse where a
            machine computes some shapes in reduced precision.

        Raises:
          FileNotFoundError / ValueError: naming the folder when it is not a
            loadable sst_tf export; ValueError: ``batch_size < 1``.
        """
        import tensorflow as tf

        from sst_tf.export import load_export_info  # deferred: loads TensorFlow; --help stays fast

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        flag = name or "--export_dir"
        self.info = load_export_info(export_dir, flag)
        self.export_dir = os.path.abspath(export_dir)
        self.batch_size = int(batch_size)
        self._tf = tf
        tf.config.experimental.enable_tensor_float_32_execution(False)
        try:
            self._loaded = tf.saved_model.load(export_dir)
            self._fn = self._loaded.signatures["serve_jpeg"]
        except (OSError, ValueError, KeyError, tf.errors.OpError) as e:
            raise ValueError(
                f"{flag}={export_dir}: the SavedModel cannot be loaded ({type(e).__name__}); "
                "export it again with python -m sst_tf.export"
            ) from e
        self.embedding_dim = int(self.info["embedding_dim"])

    def fingerprint(self) -> np.ndarray:
        """The model's embedding [d] of a fixed probe image: which model this is.

        Two exports of one model (a copy, a moved folder) give the same
        embedding to round-off; another model (other weights) does not. An
        index records it (`save_index`), so `sst_tf.search` can tell whether
        its queries are embedded by the model that built the index.
        """
        tf = self._tf
        side = np.arange(64, dtype=np.float64)
        probe = np.stack([np.add.outer(side, side) * 2, np.subtract.outer(side, side) * 2 + 128,
                          np.multiply.outer(side, side) % 256], axis=-1)
        png = tf.io.encode_png(tf.constant(probe.astype(np.uint8))).numpy()
        return self([png])[0]

    def __call__(self, encoded: Sequence[bytes]) -> np.ndarray:
        """Embeds a list of encoded images; ``[len(encoded), d]`` float32.

        JPEG and PNG go to ``serve_jpeg`` as they are; BMP, GIF and WebP are
        decoded as training decodes them (``tf.io.decode_image``) and passed
        on as lossless PNG. The images are embedded ``batch_size`` at a time,
        a short last batch padded with copies of its first image.

        Raises:
          UndecodableImagesError: naming the positions of the images that
            cannot be decoded (checked before any is embedded).
        """
        tf = self._tf
        data, reasons = [], {}
        for i, b in enumerate(encoded):
            try:
                data.append(self._checked(b))
            except (tf.errors.OpError, ValueError) as e:
                reasons[i] = f"not a decodable image ({type(e).__name__})"
        if reasons:
            raise UndecodableImagesError(reasons)
        out = [np.zeros((0, self.embedding_dim), np.float32)]
        for start in range(0, len(data), self.batch_size):
            batch = data[start : start + self.batch_size]
            n = len(batch)
            batch = batch + [batch[0]] * (self.batch_size - n)
            emb = self._fn(images=tf.constant(batch, dtype=tf.string))["embeddings"]
            out.append(emb.numpy()[:n].astype(np.float32))
        return np.concatenate(out, 0)

    def _checked(self, data: bytes) -> bytes:
        """``data`` if a decodable JPEG or PNG, else its pixels as PNG; raises if undecodable."""
        tf = self._tf
        if not isinstance(data, bytes):
            raise ValueError(f"expected encoded bytes, got {type(data).__name__}")
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        if data.startswith((_JPEG_MAGIC, _PNG_MAGIC)):
            return data
        return tf.io.encode_png(image).numpy()


def embed_files(
    embed_fn: Callable[[Sequence[bytes]], np.ndarray],
    paths: Sequence[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Embeds files in batches, skipping the ones that cannot be read or decoded.

    Args:
      embed_fn: maps a list of encoded images to ``[n, d]`` embeddings and
        raises on undecodable input: `UndecodableImagesError` naming the bad
        positions (as `Embedder` does), or any other error, in which case the
        batch's files are tried one by one.
      paths: image files.
      batch_size: files read per call of ``embed_fn`` (with an `Embedder`,
        how many images each forward pass has is the embedder's own
        ``batch_size``).
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
            except UndecodableImagesError as e:  # embed the others together
                failed.extend((batch_paths[i], r) for i, r in sorted(e.reasons.items()))
                good = [i for i in range(len(batch_paths)) if i not in e.reasons]
                if good:
                    chunks.append(np.asarray(embed_fn([batch_bytes[i] for i in good]), np.float32))
                    kept.extend(batch_paths[i] for i in good)
            except Exception:  # noqa: BLE001 - find the bad files one by one
                for p, b in zip(batch_paths, batch_bytes, strict=True):
                    try:
                        chunks.append(np.asarray(embed_fn([b]), np.float32))
                        kept.append(p)
                    except Exception as e:  # noqa: BLE001
                        failed.append((p, f"not a decodable image ({type(e).__name__})"))
        if bar is not None:
            bar.update(min(start + batch_size, len(paths)))
    for p, reason in failed:
        logging.warning("skipped %s: %s", p, reason)
    if failed:
        logging.warning("skipped %d of %d files", len(failed), len(paths))
    embeddings = np.concatenate(chunks, 0) if chunks else np.zeros((0, 0), np.float32)
    return kept, embeddings, failed


def _progress_bar(total: int):
    """A live bar on a terminal; on a file or pipe only the final line (no control codes)."""
    import sys

    import keras

    return keras.utils.Progbar(total, unit_name="image",
                               verbose=1 if sys.stdout.isatty() else 2)


def save_index(
    output: str,
    paths: Sequence[str],
    embeddings: np.ndarray,
    export_dir: str = "",
    failed: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    fingerprint: np.ndarray | None = None,
) -> None:
    """Writes an embeddings index ``.npz`` atomically (temporary file + rename).

    ``batch_size`` is the `Embedder`'s that made ``embeddings``: queries
    embedded with it match their own rows exactly. ``fingerprint`` is its
    `Embedder.fingerprint()` (which model made the index).
    """
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
                batch_size=np.asarray(int(batch_size), np.int64),
                failed=np.asarray(list(failed), dtype=str),
                **({} if fingerprint is None else
                   {"fingerprint": np.asarray(fingerprint, np.float32).reshape(-1)}),
                format=np.asarray(INDEX_FORMAT),
            )
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_index(path: str, flag: str = "--index") -> dict[str, np.ndarray | str | int]:
    """Reads an index written by `save_index`.

    Returns ``paths``, ``embeddings``, ``export_dir`` (``""`` if not recorded),
    ``batch_size`` (`DEFAULT_BATCH_SIZE` if not recorded) and ``fingerprint``
    (the model's `Embedder.fingerprint()`, None if not recorded).

    Raises:
      FileNotFoundError / ValueError: naming the file when missing or malformed.
    """
    if not os.path.isfile(path):
        what = "is a folder, not an index file" if os.path.isdir(path) else "does not exist"
        raise FileNotFoundError(f"{flag}={path} {what}")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array")
        with z:
            missing = {"paths", "embeddings"} - set(z.files)
            if missing:
                raise ValueError(f"missing {sorted(missing)}")
            index = {
                "paths": z["paths"],
                "embeddings": z["embeddings"].astype(np.float32),
                "export_dir": str(z["export_dir"]) if "export_dir" in z.files else "",
                "batch_size": (int(z["batch_size"]) if "batch_size" in z.files
                               else DEFAULT_BATCH_SIZE),
                "fingerprint": (z["fingerprint"].astype(np.float32)
                                if "fingerprint" in z.files else None),
            }
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"{flag}={path} is not an index written by sst_tf.embed ({_first_line(e)})"
        ) from e
    emb = index["embeddings"]
    if index["batch_size"] < 1:
        raise ValueError(f"{flag}={path} is not a usable index: batch_size {index['batch_size']}")
    if emb.ndim != 2 or len(index["paths"]) != emb.shape[0] or emb.shape[0] == 0:
        raise ValueError(
            f"{flag}={path} is not a usable index: {len(index['paths'])} paths and "
            f"embeddings of shape {emb.shape}"
        )
    return index


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    if "pickle" in text:  # numpy's wording for a file that is not an .npz/.npy
        text = "not a NumPy .npz file"
    return text


def is_index_file(path: str) -> bool:
    """Whether ``path`` is an index this module wrote (so it may be replaced)."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False
    if not isinstance(z, np.lib.npyio.NpzFile):
        return False
    with z:
        return {"paths", "embeddings"} <= set(z.files)


FLAGS = flags.FLAGS
PROG = "sst_tf.embed"


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """Defines this entry point's flags."""
    flags.DEFINE_string("export_dir", None, "SavedModel folder written by sst_tf.export.",
                        flag_values=fv)
    flags.DEFINE_string(
        "images", None,
        f"Folder (recursive), file or glob of images ({', '.join(IMAGE_EXTENSIONS)}).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "output", "embeddings.npz",
        "Where to write the .npz index (an existing file is replaced only if it is an index).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "batch_size", DEFAULT_BATCH_SIZE,
        "Images per forward pass (recorded in the index; sst_tf.search embeds queries with it).",
        flag_values=fv,
    )


def check_flags(argv: Sequence[str]) -> None:
    """The usage checks, before TensorFlow is imported (raises `cli.UsageError`)."""
    cli.check_usage(argv, FLAGS, required=["export_dir", "images"])
    if FLAGS.batch_size < 1:
        raise cli.UsageError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
    if not FLAGS.output.endswith(".npz"):
        raise cli.UsageError(f"--output={FLAGS.output} must end in .npz")


@cli.entry_point(PROG, tensorflow=True, quiet_info=True, usage=check_flags)
def main(argv: Sequence[str]) -> int:
    """Entry point."""
    try:
        check_output_file(FLAGS.output, f"--output={FLAGS.output}", is_index_file)
        paths = list_images(FLAGS.images)
        embedder = Embedder(FLAGS.export_dir, batch_size=FLAGS.batch_size)
    except (FileNotFoundError, ValueError) as e:
        raise cli.UsageError(str(e)) from e
    logging.info("embedding %d files with %s", len(paths), FLAGS.export_dir)
    kept, emb, failed = embed_files(embedder, paths, FLAGS.batch_size)
    if not kept:
        raise cli.RunError(
            f"none of the {len(paths)} files of --images={FLAGS.images} could be decoded"
        )
    try:
        save_index(FLAGS.output, kept, emb, embedder.export_dir, [p for p, _ in failed],
                   embedder.batch_size, embedder.fingerprint())
    except OSError as e:  # no permission, disk full, ...
        raise cli.RunError(f"writing --output={FLAGS.output} failed: {e}") from e
    print(
        f"wrote {len(kept)} embeddings of size {emb.shape[1]} to {FLAGS.output}"
        + (f"; skipped {len(failed)} unreadable files" if failed else "")
    )
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
