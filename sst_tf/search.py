"""Exact nearest-neighbour search in an embeddings index.

    python -m sst_tf.search --index=embeddings.npz --query=photo.jpg --top_k=5

``--query`` is an image file, a folder or a glob; the queries are embedded
with the export recorded in the index (or ``--export_dir``) and the index's
batch size, so a query that is in the index embeds exactly to its own row
(see `sst_tf.embed.Embedder`). Results are
printed as a table (rank, Euclidean distance between embeddings, path), and
written as JSON with ``--output`` (``--json`` prints JSON instead of the
table). ``--exclude_self`` leaves a query's own file out of its results when
the query is in the index. The search is exact and chunked, so memory stays
bounded by ``query_chunk x index_chunk`` distances whatever the index size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from absl import flags, logging

from sst_tf import calibration, cli
from sst_tf.embed import Embedder, embed_files, list_images, load_index
from sst_tf.outputs import check_output_file, write_text_atomic

_RERANK_MARGIN = 16  # candidates beyond k whose distances are recomputed exactly
_RERANK_FLOATS = 1 << 24  # bound on the [rows, candidates, d] differences held at once


def chunked_top_k(
    queries: np.ndarray,
    index: np.ndarray,
    k: int,
    query_chunk: int = 256,
    index_chunk: int = 32768,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by squared Euclidean distance, in chunks.

    Candidates are picked by the fast expansion ``|q|^2 - 2 q.x + |x|^2`` (one
    matrix product per block), and the ``k + 16`` best of each block get their
    distance recomputed from the difference ``q - x``, which is what is ranked
    and returned. The expansion alone loses the small distances to float32
    cancellation: for embeddings of norm 550 it puts identical vectors at up
    to ~0.18 apart, depending on how the BLAS sums the dot products; the
    difference puts them at exactly 0.

    Args:
      queries: ``[Q, d]``.
      index: ``[N, d]``.
      k: neighbours per query (clipped to N).
      query_chunk: queries per block.
      index_chunk: index rows per block.

    Returns:
      ``(sq_distances [Q, k] float32 ascending, indices [Q, k] int64)``; ties
      go to the lower index.
    """
    queries = np.asarray(queries, np.float32)
    index = np.asarray(index, np.float32)
    if queries.ndim != 2 or index.ndim != 2 or queries.shape[1] != index.shape[1]:
        raise ValueError(
            f"queries {queries.shape} and index {index.shape} must be [Q, d] and [N, d]"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = index.shape[0]
    k = min(k, n)
    out_d = np.empty((queries.shape[0], k), np.float32)
    out_i = np.empty((queries.shape[0], k), np.int64)
    index_sq = np.einsum("ij,ij->i", index, index)
    for qs in range(0, queries.shape[0], query_chunk):
        q = queries[qs : qs + query_chunk]
        q_sq = np.einsum("ij,ij->i", q, q)[:, None]
        best_d = np.full((q.shape[0], 0), np.inf, np.float32)
        best_i = np.zeros((q.shape[0], 0), np.int64)
        for s in range(0, n, index_chunk):
            x = index[s : s + index_chunk]
            d = q_sq - 2.0 * (q @ x.T) + index_sq[None, s : s + index_chunk]
            kk = min(k + _RERANK_MARGIN, x.shape[0])
            if kk < x.shape[0]:
                part = np.argpartition(d, kk - 1, axis=1)[:, :kk]
            else:
                part = np.broadcast_to(np.arange(x.shape[0]), d.shape)
            cand_d = np.concatenate([best_d, _exact_sq_distances(q, x, part)], 1)
            cand_i = np.concatenate([best_i, part + s], 1)
            order = np.lexsort((cand_i, cand_d), axis=-1)[:, :k]
            best_d = np.take_along_axis(cand_d, order, 1)
            best_i = np.take_along_axis(cand_i, order, 1)
        out_d[qs : qs + query_chunk] = best_d
        out_i[qs : qs + query_chunk] = best_i
    return out_d, out_i


def _exact_sq_distances(q: np.ndarray, x: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """``|q_i - x_cand[i, j]|^2`` as float32 ``[len(q), cand.shape[1]]``, in bounded blocks."""
    out = np.empty(cand.shape, np.float32)
    rows = max(1, _RERANK_FLOATS // max(1, cand.shape[1] * x.shape[1]))
    for r in range(0, q.shape[0], rows):
        diff = q[r : r + rows, None, :] - x[cand[r : r + rows]]
        out[r : r + rows] = np.einsum("qkd,qkd->qk", diff, diff)
    return out


def search_results(
    query_paths: Sequence[str],
    query_embeddings: np.ndarray,
    index_paths: Sequence[str],
    index_embeddings: np.ndarray,
    top_k: int,
    exclude_self: bool = False,
) -> list[dict]:
    """JSON-ready results: per query its neighbours' paths and Euclidean distances.

    Args:
      query_paths: the queries' file paths.
      query_embeddings: ``[Q, d]``.
      index_paths: the index's file paths.
      index_embeddings: ``[N, d]``.
      top_k: neighbours per query.
      exclude_self: leave out index entries with the query's own path
        (compared as absolute paths), so an indexed query does not find itself.
    """
    own = [os.path.abspath(str(p)) for p in query_paths]
    sq, idx = chunked_top_k(query_embeddings, index_embeddings, top_k + int(exclude_self))
    results = []
    for qi, qp in enumerate(query_paths):
        pairs = [(d, j) for d, j in zip(sq[qi], idx[qi], strict=True)
                 if not (exclude_self and os.path.abspath(str(index_paths[j])) == own[qi])]
        results.append({
            "query": str(qp),
            "neighbors": [
                {"rank": r + 1, "path": str(index_paths[j]), "distance": float(np.sqrt(d))}
                for r, (d, j) in enumerate(pairs[:top_k])
            ],
        })
    return results


def apply_threshold(results: list[dict], threshold: float) -> list[dict]:
    """Marks each neighbour within `threshold` as a match, each query with none as no match.

    Adds "match" (bool) to every neighbour and to every query (whether any
    neighbour is within the threshold), and "threshold" to every query.
    """
    for r in results:
        for nb in r["neighbors"]:
            nb["match"] = bool(nb["distance"] <= threshold)
        r["match"] = any(nb["match"] for nb in r["neighbors"])
        r["threshold"] = float(threshold)
    return results


def format_table(results: list[dict]) -> str:
    """The results as text: per query a header line and one line per neighbour."""
    lines = []
    for r in results:
        verdict = ("" if "match" not in r else
                   f"  ({'match' if r['match'] else 'no match'} within {r['threshold']:.4f})")
        lines.append(f"query: {r['query']}{verdict}")
        lines.append(f"  {'rank':>4}  {'distance':>10}  path")
        lines.extend(
            f"  {nb['rank']:>4}  {nb['distance']:10.4f}  {nb['path']}"
            + ("" if "match" not in nb else ("  match" if nb["match"] else "  -"))
            for nb in r["neighbors"]
        )
    return "\n".join(lines)


def is_results_file(path: str) -> bool:
    """Whether ``path`` holds results this command wrote (so ``--output`` may replace it)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, list) and all(
        isinstance(r, dict) and {"query", "neighbors"} <= set(r) for r in data
    )


FLAGS = flags.FLAGS
PROG = "sst_tf.search"


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """Defines this entry point's flags."""
    flags.DEFINE_string("index", None, "Index .npz written by sst_tf.embed.", flag_values=fv)
    flags.DEFINE_string("query", None, "Query image file, folder or glob.", flag_values=fv)
    flags.DEFINE_integer("top_k", 5, "Neighbours per query.", flag_values=fv)
    flags.DEFINE_string("export_dir", None, "SavedModel to embed queries (default: the index's).",
                        flag_values=fv)
    flags.DEFINE_string("output", None, "Write the results as JSON to this file.", flag_values=fv)
    flags.DEFINE_bool("json", False, "Print JSON instead of a table.", flag_values=fv)
    flags.DEFINE_string("threshold", None,
                        "Mark neighbours within this distance as matches and queries without "
                        "one as 'no match': a distance, or a threshold the export records "
                        "(best_f1, fmr=0.01, fmr=0.001: calibrated at the end of training).",
                        flag_values=fv)
    flags.DEFINE_bool("exclude_self", False,
                      "Leave a query's own file out of its results when it is in the index.",
                      flag_values=fv)


def _export_for(index: dict) -> tuple[str, str]:
    """The export that embeds the queries and how messages name it."""
    if FLAGS.export_dir:
        return FLAGS.export_dir, "--export_dir"
    export_dir = str(index["export_dir"])
    if not export_dir:
        raise cli.UsageError(f"--index={FLAGS.index} records no export: pass --export_dir")
    if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        raise cli.UsageError(
            f"--index={FLAGS.index} was made with the export {export_dir}, which is no longer "
            "there (no saved_model.pb): pass --export_dir=<where that export is now>"
        )
    return export_dir, f"the export recorded in --index={FLAGS.index}"


def _check_same_model(index: dict, embedder: Embedder, export_dir: str,
                      export_name: str) -> None:
    """Refuses an export other than the model that built the index (`Embedder.fingerprint`)."""
    recorded = index.get("fingerprint")
    if recorded is None or recorded.shape != (embedder.embedding_dim,):
        logging.warning("--index=%s records no model fingerprint (an earlier sst_tf.embed): "
                        "cannot check that %s is the model that built it.", FLAGS.index,
                        export_name)
        return
    probe = embedder.fingerprint()
    gap = float(np.abs(probe - recorded).max())
    if gap > 1e-4 * max(1.0, float(np.abs(recorded).max())):
        raise cli.UsageError(
            f"{export_name} ({export_dir}) is not the model that built --index={FLAGS.index} "
            f"(their embeddings of one probe image differ by up to {gap:.3g}): its distances "
            "would mean nothing. Search with the index's export, or build an index with this "
            "one (python -m sst_tf.embed)")


def check_flags(argv: Sequence[str]) -> None:
    """The usage checks, before TensorFlow is imported (raises `cli.UsageError`)."""
    cli.check_usage(argv, FLAGS, required=["index", "query"])
    if FLAGS.top_k < 1:
        raise cli.UsageError(f"--top_k must be >= 1, got {FLAGS.top_k}")
    try:  # a number's range now; a name once the export is loaded
        calibration.parse_threshold(FLAGS.threshold)
    except ValueError as e:
        raise cli.UsageError(str(e)) from e


@cli.entry_point(PROG, tensorflow=True, quiet_info=True, usage=check_flags)
def main(argv: Sequence[str]) -> int:
    """Entry point."""
    try:
        if FLAGS.output:
            check_output_file(FLAGS.output, f"--output={FLAGS.output}", is_results_file)
        index = load_index(FLAGS.index)
        export_dir, export_name = _export_for(index)
        queries = list_images(FLAGS.query, "--query")
        embedder = Embedder(export_dir, export_name, batch_size=index["batch_size"])
        threshold = calibration.resolve_threshold(FLAGS.threshold, embedder.info, export_name)
    except (FileNotFoundError, ValueError) as e:
        raise cli.UsageError(str(e)) from e
    if embedder.embedding_dim != index["embeddings"].shape[1]:
        raise cli.UsageError(
            f"{export_name} ({export_dir}) gives {embedder.embedding_dim}-d embeddings but "
            f"--index={FLAGS.index} holds {index['embeddings'].shape[1]}-d ones"
        )
    _check_same_model(index, embedder, export_dir, export_name)
    kept, q_emb, failed = embed_files(embedder, queries, embedder.batch_size, progress=False)
    if not kept:
        raise cli.RunError(f"none of the {len(queries)} query images of --query={FLAGS.query} "
                           "could be decoded")
    results = search_results(kept, q_emb, index["paths"], index["embeddings"], FLAGS.top_k,
                             FLAGS.exclude_self)
    if threshold is not None:
        apply_threshold(results, threshold)
    if FLAGS.output:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
            write_text_atomic(FLAGS.output, json.dumps(results, indent=2) + "\n")
        except OSError as e:  # no permission, disk full, ...
            raise cli.RunError(f"writing --output={FLAGS.output} failed: {e}") from e
    if FLAGS.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{len(index['paths'])} images in --index={FLAGS.index}; distance: Euclidean, "
              "between embeddings (0 = same embedding)"
              + ("; queries' own files left out" if FLAGS.exclude_self else ""))
        print(format_table(results))
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
