"""Exact nearest-neighbour search in an embeddings index.

    python -m sst_tf.search --index=embeddings.npz --query=photo.jpg --top_k=5

``--query`` is an image file, a folder or a glob; the queries are embedded
with the export recorded in the index (or ``--export_dir``). Results are
printed, and written as JSON with ``--output`` (``--json`` prints JSON
instead of the table). The search is exact and chunked, so memory stays
bounded by ``query_chunk x index_chunk`` distances whatever the index size.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import numpy as np
from absl import app, flags


def chunked_top_k(
    queries: np.ndarray,
    index: np.ndarray,
    k: int,
    query_chunk: int = 256,
    index_chunk: int = 32768,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by squared Euclidean distance, in chunks.

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
            d = np.maximum(q_sq - 2.0 * (q @ x.T) + index_sq[None, s : s + index_chunk], 0.0)
            kk = min(k, x.shape[0])
            part = np.argpartition(d, kk - 1, axis=1)[:, :kk] if kk < x.shape[0] else None
            if part is None:
                part = np.broadcast_to(np.arange(x.shape[0]), d.shape)
            cand_d = np.concatenate([best_d, np.take_along_axis(d, part, 1)], 1)
            cand_i = np.concatenate([best_i, part + s], 1)
            order = np.lexsort((cand_i, cand_d), axis=-1)[:, :k]
            best_d = np.take_along_axis(cand_d, order, 1)
            best_i = np.take_along_axis(cand_i, order, 1)
        out_d[qs : qs + query_chunk] = best_d
        out_i[qs : qs + query_chunk] = best_i
    return out_d, out_i


def search_results(
    query_paths: Sequence[str],
    query_embeddings: np.ndarray,
    index_paths: Sequence[str],
    index_embeddings: np.ndarray,
    top_k: int,
) -> list[dict]:
    """JSON-ready results: per query its neighbours' paths and Euclidean distances."""
    sq, idx = chunked_top_k(query_embeddings, index_embeddings, top_k)
    return [
        {
            "query": str(qp),
            "neighbors": [
                {"rank": r + 1, "path": str(index_paths[j]), "distance": float(np.sqrt(d))}
                for r, (d, j) in enumerate(zip(sq[qi], idx[qi], strict=True))
            ],
        }
        for qi, qp in enumerate(query_paths)
    ]


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this entry point's flags."""
    flags.DEFINE_string("index", None, "Index .npz written by sst_tf.embed.")
    flags.DEFINE_string("query", None, "Query image file, folder or glob.")
    flags.DEFINE_integer("top_k", 5, "Neighbours per query.")
    flags.DEFINE_string("export_dir", None, "SavedModel to embed queries (default: the index's).")
    flags.DEFINE_string("output", None, "Write the results as JSON to this file.")
    flags.DEFINE_bool("json", False, "Print JSON instead of a table.")


def main(argv: Sequence[str]) -> int:
    """Entry point."""
    del argv
    from sst_tf.embed import Embedder, embed_files, list_images, load_index

    for name in ("index", "query"):
        if not getattr(FLAGS, name):
            print(f"sst_tf.search: error: --{name} is required", file=sys.stderr)
            return 2
    if FLAGS.top_k < 1:
        print(f"sst_tf.search: error: --top_k must be >= 1, got {FLAGS.top_k}", file=sys.stderr)
        return 2
    try:
        index = load_index(FLAGS.index)
        export_dir = FLAGS.export_dir or index["export_dir"]
        if not export_dir:
            raise ValueError(f"--index={FLAGS.index} records no export: pass --export_dir")
        queries = list_images(FLAGS.query)
        embedder = Embedder(export_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"sst_tf.search: error: {e}", file=sys.stderr)
        return 2
    if embedder.embedding_dim != index["embeddings"].shape[1]:
        print(
            f"sst_tf.search: error: --export_dir={export_dir} gives "
            f"{embedder.embedding_dim}-d embeddings but --index={FLAGS.index} holds "
            f"{index['embeddings'].shape[1]}-d ones",
            file=sys.stderr,
        )
        return 2
    kept, q_emb, failed = embed_files(embedder, queries, progress=False)
    for p, reason in failed:
        print(f"skipped query {p}: {reason}", file=sys.stderr)
    if not kept:
        print("sst_tf.search: error: no query image could be decoded", file=sys.stderr)
        return 1
    results = search_results(kept, q_emb, index["paths"], index["embeddings"], FLAGS.top_k)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(results, f, indent=2)
    if FLAGS.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"query: {r['query']}")
            for nb in r["neighbors"]:
                print(f"  {nb['rank']:>3}  {nb['distance']:10.4f}  {nb['path']}")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
