"""Figures of an embedding space, like the paper's figures 3-6.

    python -m sst_tf.visualize --model_dir=runs/digits

writes into ``MODEL_DIR/figures/``:

* ``retrieval.png``: random test queries (left, blue frame) and their 4
  nearest neighbours, framed green when of the query's class, red otherwise;
* ``tsne.png``: a Barnes-Hut t-SNE map of the test embeddings, drawn as
  thumbnails framed in their class colour (or as coloured points with
  ``--tsne_thumbnails=false``).

The trainer adds ``thresholds.png`` at the end of a run (`threshold_figure`):
the same / different error rates of every distance threshold on the training
and the test classes, with the calibrated thresholds marked.

The folder gets a ``.sst_tf`` marker; a folder holding other files is refused,
so figures never replace a user's files. ``--num_queries`` is at most
`MAX_QUERIES` (the figure grows by 76 px per query).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from absl import flags, logging

from sst_tf import cli
from sst_tf import data as data_lib
from sst_tf.outputs import check_output_dir, write_marker
from sst_tf.projector import thumbnails
from sst_tf.run_state import RunFolder
from sst_tf.search import chunked_top_k

PROG = "sst_tf.visualize"
MAX_QUERIES = 100  # rows of the retrieval figure: 100 x 76 px = 7,600 px tall

QUERY_COLOR = (30, 90, 220)
SAME_COLOR = (0, 170, 0)
OTHER_COLOR = (220, 0, 0)
BACKGROUND = (255, 255, 255)


def nearest_neighbors(embeddings: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest neighbours of each query index, the query itself excluded."""
    _, idx = chunked_top_k(embeddings[queries], embeddings, min(k + 1, len(embeddings)))
    out = np.empty((len(queries), min(k, len(embeddings) - 1)), np.int64)
    for row, q in enumerate(queries):
        others = [j for j in idx[row] if j != q]
        out[row] = others[: out.shape[1]]
    return out


def retrieval_grid(
    embeddings: np.ndarray,
    labels: Sequence,
    images: np.ndarray | Sequence[str],
    num_queries: int = 8,
    k: int = 4,
    thumb: int = 64,
    border: int = 4,
    gap: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Draws the retrieval figure as a uint8 RGB image.

    Layout (pixels): a margin of ``gap`` all round; each row is one query; a
    cell is ``thumb + 2 * border`` square; cells are ``gap`` apart, with an
    extra ``2 * gap`` between the query column and its neighbours.

    Args:
      embeddings: ``[N, d]``.
      labels: ``N`` labels.
      images: ``[N, H, W(, C)]`` images or ``N`` image file paths.
      num_queries: rows (random queries, seeded; at most N).
      k: neighbours per query.
      thumb: thumbnail side in pixels.
      border: frame width in pixels.
      gap: spacing in pixels.
      seed: seed of the query sample.

    Returns:
      ``(image [H, W, 3] uint8, info)`` with ``info["queries"]`` (indices),
      ``info["neighbors"]`` (``[num_queries, k]`` indices) and
      ``info["cells"]`` (``{(row, col): (top, left)}`` of each cell's frame).
    """
    labels = np.asarray(labels)
    n = len(embeddings)
    if n < 2:
        raise ValueError("the retrieval grid needs at least 2 embeddings")
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(n, min(num_queries, n), replace=False))
    neighbors = nearest_neighbors(np.asarray(embeddings, np.float32), queries, k)
    k = neighbors.shape[1]
    shown = np.unique(np.concatenate([queries, neighbors.ravel()]))
    thumbs = dict(zip(shown.tolist(), thumbnails(images, shown, thumb), strict=True))
    cell = thumb + 2 * border
    width = 2 * gap + (k + 1) * cell + k * gap + 2 * gap
    height = 2 * gap + len(queries) * cell + (len(queries) - 1) * gap
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    cells = {}

    def put(row, col, index, color):
        top = gap + row * (cell + gap)
        left = gap + col * (cell + gap) + (2 * gap if col > 0 else 0)
        canvas[top : top + cell, left : left + cell] = color
        canvas[top + border : top + border + thumb, left + border : left + border + thumb] = thumbs[
            index
        ]
        cells[(row, col)] = (top, left)

    for row, q in enumerate(queries):
        put(row, 0, q, QUERY_COLOR)
        for col, j in enumerate(neighbors[row], start=1):
            put(row, col, j, SAME_COLOR if labels[j] == labels[q] else OTHER_COLOR)
    return canvas, {"queries": queries, "neighbors": neighbors, "cells": cells}


def tsne_2d(embeddings: np.ndarray, seed: int = 0, max_iter: int = 1000) -> np.ndarray:
    """Barnes-Hut t-SNE of ``[N, d]`` embeddings to ``[N, 2]`` (scikit-learn)."""
    from sklearn.manifold import TSNE

    n = len(embeddings)
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {n}")
    perplexity = float(min(30.0, (n - 1) / 3.0))
    tsne = TSNE(
        n_components=2,
        method="barnes_hut",
        perplexity=perplexity,
        init="pca",
        random_state=seed,
        max_iter=max_iter,
    )
    return tsne.fit_transform(np.asarray(embeddings, np.float64)).astype(np.float32)


def tsne_figure(
    points: np.ndarray,
    labels: Sequence,
    path: str,
    images: np.ndarray | Sequence[str] | None = None,
    size_px: int = 1200,
    dpi: int = 100,
    thumb: int = 24,
    title: str | None = None,
) -> str:
    """Draws 2-D points (thumbnails framed in class colour, or dots) to a PNG.

    The PNG is exactly ``size_px`` x ``size_px`` pixels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    labels = np.asarray(labels)
    classes, codes = np.unique(labels, return_inverse=True)
    cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    colors = cmap(codes % cmap.N)
    fig = plt.figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
    try:
        ax = fig.add_axes((0.02, 0.02, 0.96, 0.96 if not title else 0.92))
        ax.set_xticks([])
        ax.set_yticks([])
        if title:
            fig.suptitle(title)
        if images is None:
            ax.scatter(points[:, 0], points[:, 1], c=colors, s=18, linewidths=0)
        else:
            ax.scatter(points[:, 0], points[:, 1], c=colors, s=1, alpha=0)
            thumbs = thumbnails(images, np.arange(len(points)), thumb)
            for (x, y), im, c in zip(points, thumbs, colors, strict=True):
                box = AnnotationBbox(
                    OffsetImage(im, zoom=72.0 / dpi),
                    (x, y),
                    frameon=True,
                    pad=0.1,
                    bboxprops={"edgecolor": c, "linewidth": 1.5},
                )
                ax.add_artist(box)
        if len(classes) <= 20:
            from matplotlib.lines import Line2D

            handles = [
                Line2D([], [], marker="s", linestyle="", color=cmap(i % cmap.N), label=str(c))
                for i, c in enumerate(classes)
            ]
            ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.8)
        pad_x = 0.03 * (np.ptp(points[:, 0]) or 1.0)
        pad_y = 0.03 * (np.ptp(points[:, 1]) or 1.0)
        ax.set_xlim(points[:, 0].min() - pad_x, points[:, 0].max() + pad_x)
        ax.set_ylim(points[:, 1].min() - pad_y, points[:, 1].max() + pad_y)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def save_png(image: np.ndarray, path: str) -> str:
    """Writes a uint8 RGB array as PNG (to a temporary file, then renamed)."""
    from PIL import Image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    Image.fromarray(image).save(tmp)
    os.replace(tmp, path)
    return path


def write_figures(
    out_dir: str,
    embeddings: np.ndarray,
    labels: Sequence,
    images: np.ndarray | Sequence[str],
    num_queries: int = 8,
    k: int = 4,
    tsne_points: int = 2000,
    tsne_thumbnails: bool = True,
    tsne_iter: int = 1000,
    seed: int = 0,
) -> dict[str, str]:
    """Writes ``retrieval.png`` and ``tsne.png`` into ``out_dir``; returns their paths.

    Raises:
      UsageError: ``out_dir`` is a file or a folder of files sst_tf did not write.
    """
    check_output_dir(out_dir, f"--out_dir={out_dir}", "figures", legacy=legacy_figures)
    embeddings = np.asarray(embeddings, np.float32)
    labels = np.asarray(labels)
    grid, _ = retrieval_grid(embeddings, labels, images, num_queries, k, seed=seed)
    os.makedirs(out_dir, exist_ok=True)
    write_marker(out_dir, "figures", PROG)
    paths = {"retrieval": save_png(grid, os.path.join(out_dir, "retrieval.png"))}
    n = len(embeddings)
    keep = np.arange(n)
    if n > tsne_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, tsne_points, replace=False))
        logging.info("t-SNE on a seeded sample of %d of %d points", tsne_points, n)
    points = tsne_2d(embeddings[keep], seed=seed, max_iter=tsne_iter)
    tmp = os.path.join(out_dir, "tsne.tmp.png")
    tsne_figure(
        points,
        labels[keep],
        tmp,
        images=thumbnails(images, keep, 24) if tsne_thumbnails else None,
        title=f"t-SNE of {len(keep)} test embeddings",
    )
    os.replace(tmp, os.path.join(out_dir, "tsne.png"))
    paths["tsne"] = os.path.join(out_dir, "tsne.png")
    return paths


def threshold_figure(curves: dict[str, dict[str, list[float]]],
                     marks: dict[str, tuple[float, float]], path: str,
                     title: str | None = None, size_px: int = 800, dpi: int = 100) -> str:
    """A DET plot: FNMR against FMR of each curve, log-log, the thresholds marked.

    Args:
      curves: {label: `Calibration.curve`} (its "fmr" and "fnmr" lists).
      marks: {threshold name: (fmr, fnmr)} where a named threshold lands.
      path: the PNG to write.
      title: the figure's title.
      size_px: width and height in pixels.
      dpi: dots per inch.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-5  # zero rates drawn at the bottom of the log axes
    fig = plt.figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
    try:
        ax = fig.add_subplot(1, 1, 1)
        for label, curve in curves.items():
            ax.plot(np.maximum(curve["fmr"], floor), np.maximum(curve["fnmr"], floor),
                    label=label)
        for name, (fmr, fnmr) in marks.items():
            ax.plot(max(fmr, floor), max(fnmr, floor), "o", color="black")
            ax.annotate(name, (max(fmr, floor), max(fnmr, floor)), textcoords="offset points",
                        xytext=(6, 6), fontsize=9)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("false-match rate (different-class pairs called the same)")
        ax.set_ylabel("false-non-match rate (same-class pairs called different)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best")
        if title:
            ax.set_title(title)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def write_threshold_figure(out_dir: str, curves: dict[str, dict[str, list[float]]],
                           marks: dict[str, tuple[float, float]]) -> str:
    """Writes ``thresholds.png`` (`threshold_figure`) into the figures folder ``out_dir``.

    Raises:
      UsageError: ``out_dir`` is a file or a folder of files sst_tf did not write.
    """
    check_output_dir(out_dir, f"the figures folder {out_dir}", "figures",
                     legacy=legacy_figures)
    os.makedirs(out_dir, exist_ok=True)
    write_marker(out_dir, "figures", PROG)
    tmp = os.path.join(out_dir, "thresholds.tmp.png")
    threshold_figure(curves, marks, tmp, title="Same / different decisions by distance")
    os.replace(tmp, os.path.join(out_dir, "thresholds.png"))
    return os.path.join(out_dir, "thresholds.png")


def legacy_figures(folder: str) -> str | None:
    """Recognises figure folders written before folders carried a marker."""
    names = set(os.listdir(folder))
    return "figures" if names and names <= {"retrieval.png", "tsne.png"} else None


def embed_split(model, split, spec, batch_size: int = 256) -> np.ndarray:
    """Embeds a data split through the evaluation pipeline -> ``[N, d]`` float32."""
    import tensorflow as tf

    from sst_tf import pipeline  # deferred: loads TensorFlow; --help stays fast

    ds = pipeline.eval_dataset(split, spec.image_options(), batch_size)
    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return np.concatenate([fn(x).numpy() for x, _ in ds], 0).astype(np.float32)


def visualize_run(
    model_dir: str,
    checkpoint: str | None = None,
    out_dir: str | None = None,
    num_queries: int = 8,
    tsne_points: int = 2000,
    tsne_thumbnails: bool = True,
    seed: int = 0,
    data_dir: str | None = None,
) -> dict[str, str]:
    """Restores a run, embeds its test split and writes the figures.

    Args:
      model_dir: the training run's folder.
      checkpoint: epoch number or checkpoint path (default: the latest).
      out_dir: where the PNGs go (default ``MODEL_DIR/figures``).
      num_queries: rows of the retrieval figure.
      tsne_points: points of the t-SNE map.
      tsne_thumbnails: draw thumbnails (else coloured points).
      seed: seed of the query and t-SNE samples.
      data_dir: the data set's folder when it moved since training (default:
        the one in ``MODEL_DIR/config.json``).

    Returns:
      ``{"retrieval": path, "tsne": path}`` under ``out_dir``
      (default ``MODEL_DIR/figures``).
    """
    from sst_tf import export  # deferred: loads TensorFlow; --help stays fast

    out_dir = out_dir or RunFolder(model_dir).figures
    # Before the slow part:
    check_output_dir(out_dir, f"--out_dir={out_dir}", "figures", legacy=legacy_figures)
    model, config, _ = export.restore_model(model_dir, checkpoint)
    try:
        data_lib.check_dataset_args(config.dataset, data_dir or config.data_dir,
                                    config.data_source)
    except ValueError as e:
        if data_dir:
            raise
        raise ValueError(
            f"the run's data set ({model_dir}/config.json: --dataset={config.dataset} "
            f"--data_dir={config.data_dir}) cannot be read: {e} If it moved, pass "
            "--data_dir=NEW_FOLDER.") from e
    split = data_lib.load_dataset(config.dataset, data_dir or config.data_dir,
                                  **config.reader_options()).test
    emb = embed_split(model, split, export.spec_for_config(config), config.eval_batch_size)
    images = split.images if split.images is not None else list(split.paths)
    return write_figures(
        out_dir,
        emb,
        split.labels,
        images,
        num_queries=num_queries,
        tsne_points=tsne_points,
        tsne_thumbnails=tsne_thumbnails,
        seed=seed,
    )


FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """Defines this entry point's flags (only when run as a program)."""
    flags.DEFINE_string("model_dir", None, "Training run folder.", flag_values=fv)
    flags.DEFINE_string("checkpoint", None, "Epoch number or checkpoint path (default: latest).",
                        flag_values=fv)
    flags.DEFINE_string("out_dir", None, "Where to write the PNGs (default: MODEL_DIR/figures).",
                        flag_values=fv)
    flags.DEFINE_integer("num_queries", 8, f"Rows of the retrieval figure (1..{MAX_QUERIES}).",
                         flag_values=fv)
    flags.DEFINE_integer("tsne_points", 2000, "Points in the t-SNE map (seeded sample beyond).",
                         flag_values=fv)
    flags.DEFINE_bool("tsne_thumbnails", True, "Draw thumbnails (else coloured points).",
                      flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the query and t-SNE samples.", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "The run's data set folder, if it moved since "
                        "training (default: the one recorded in MODEL_DIR/config.json).",
                        flag_values=fv)


def check_flags(argv: Sequence[str]) -> None:
    """The usage checks, before TensorFlow is imported (raises `cli.UsageError`)."""
    f = FLAGS
    cli.check_usage(argv, f, required=["model_dir"])
    if not 1 <= f.num_queries <= MAX_QUERIES:
        raise cli.UsageError(
            f"--num_queries={f.num_queries} must be in 1..{MAX_QUERIES} (one figure row of "
            f"76 px per query; {f.num_queries} would make it "
            f"{8 + 76 * f.num_queries - 4:,} px tall)"
        )
    if f.tsne_points < 5:
        raise cli.UsageError(f"--tsne_points={f.tsne_points} must be >= 5 (t-SNE needs 5 points)")


@cli.entry_point(PROG, tensorflow=True, quiet_info=True, usage=check_flags)
def main(argv: Sequence[str]) -> int:
    """Entry point: ``python -m sst_tf.visualize --model_dir=RUN``."""
    f = FLAGS
    try:
        paths = visualize_run(
            f.model_dir,
            f.checkpoint,
            f.out_dir,
            f.num_queries,
            f.tsne_points,
            f.tsne_thumbnails,
            f.seed,
            f.data_dir,
        )
    except (FileNotFoundError, ValueError, NotImplementedError) as e:
        raise cli.UsageError(str(e)) from e
    except OSError as e:  # no permission, disk full, ...
        raise cli.RunError(f"writing the figures failed: {e}") from e
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
