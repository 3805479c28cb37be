"""A nearest-neighbour index of embeddings: add, save and load (.npz), query.

    index = EmbeddingIndex()                       # exact search
    index.add(embeddings, labels=labels, paths=paths)
    index.save("index.npz")
    found = EmbeddingIndex.load("index.npz").query(query_embeddings, k=10)

Distances are squared Euclidean on the embeddings as given (as everywhere in
the project). `backend="exact"` (the default) is the chunked exact search of
`sst_tf.search.chunked_top_k` (memory bounded by the chunk sizes, ties to the
lower index). `backend="faiss"` is approximate search with faiss, an optional
dependency (`pip install faiss-cpu`, or the `faiss` extra of this package):
`faiss_index` is a faiss factory string ("HNSW32", "IVF1024,Flat", ...) and
`faiss_params` its search parameters ("efSearch=128", "nprobe=16"); the faiss
index is built at the first query after an `add` (training it when the
factory needs training) and saved with the index. BENCHMARKS.md (section
`index`) measures its recall and speed against exact search.

`save` writes atomically (temporary file + rename) and refuses to replace a
file that is not an index written by this module. `load` also reads the
`.npz` files of `python -m sst_tf.embed` (paths and embeddings).
"""

from __future__ import annotations

import functools
import importlib
import os
import tempfile

import numpy as np

from sst_tf.search import chunked_top_k

BACKENDS = ("exact", "faiss")
FORMAT = "sst_tf.index/1"
# The label `EmbeddingIndex.classify` gives a query it abstains on.
UNKNOWN = -1


@functools.cache
def _require_faiss():
    """The faiss module, imported on first use (an optional dependency)."""
    try:
        return importlib.import_module("faiss")
    except ImportError as e:
        raise ImportError("backend='faiss' needs faiss: pip install faiss-cpu "
                          "(or pip install 'sst_tf[faiss]').") from e


def _is_our_file(path: str) -> bool:
    try:
        with np.load(path, allow_pickle=False) as z:
            return "format" in z.files and str(z["format"]) == FORMAT
    except (OSError, ValueError, EOFError):
        return False


class EmbeddingIndex:
    """Embeddings with optional labels / paths, searchable by nearest neighbours."""

    def __init__(self, backend: str = "exact", faiss_index: str = "HNSW32",
                 faiss_params: str = "efSearch=128"):
        """Creates an empty index.

        Args:
          backend: "exact" or "faiss" (approximate, needs `faiss-cpu`).
          faiss_index: faiss factory string of the approximate index.
          faiss_params: faiss search parameters ("" for its defaults).

        Raises:
          ValueError: unknown backend. ImportError: faiss missing.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
        if backend == "faiss":
            _require_faiss()
        self.backend = backend
        self.faiss_index = faiss_index
        self.faiss_params = faiss_params
        self.embeddings = np.zeros((0, 0), np.float32)
        self.labels: np.ndarray | None = None
        self.paths: np.ndarray | None = None
        self._faiss = None

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Embedding size d (0 while empty)."""
        return int(self.embeddings.shape[1])

    def add(self, embeddings: np.ndarray, labels=None, paths=None) -> None:
        """Appends [n, d] embeddings, with labels and/or paths if the index has them.

        Args:
          embeddings: float [n, d].
          labels: optional int [n] (given on every add, or never).
          paths: optional [n] strings (given on every add, or never).
        """
        x = np.asarray(embeddings, np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"embeddings must be a non-empty [n, d] array, got {x.shape}.")
        if not np.isfinite(x).all():
            raise ValueError("embeddings contain NaN or Inf.")
        if len(self) and x.shape[1] != self.dim:
            raise ValueError(f"embeddings have d={x.shape[1]}, the index has d={self.dim}.")
        first = len(self) == 0
        new = {}
        for name, value, dtype in (("labels", labels, np.int64), ("paths", paths, str)):
            have = getattr(self, name) is not None
            if not first and have != (value is not None):
                raise ValueError(f"{name}: give them on every add or never "
                                 f"(the index {'has' if have else 'has no'} {name}).")
            if value is not None:
                value = np.asarray(value, dtype).reshape(-1)
                if len(value) != len(x):
                    raise ValueError(f"{name} has {len(value)} entries for {len(x)} embeddings.")
                new[name] = value
        self.embeddings = x.copy() if first else np.concatenate([self.embeddings, x])
        for name, value in new.items():
            old = getattr(self, name)
            setattr(self, name, value if old is None else np.concatenate([old, value]))
        self._faiss = None

    def _faiss_index(self):
        if self._faiss is None:
            lib = _require_faiss()
            index = lib.index_factory(self.dim, self.faiss_index, lib.METRIC_L2)
            if not index.is_trained:
                index.train(self.embeddings)
            index.add(self.embeddings)
            self._faiss = index
        if self.faiss_params:
            _require_faiss().ParameterSpace().set_index_parameters(self._faiss, self.faiss_params)
        return self._faiss

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest items of each query.

        Args:
          queries: float [Q, d].
          k: neighbours per query (clipped to the index size).

        Returns:
          (squared distances float32 [Q, k] ascending, indices int64 [Q, k]);
          an approximate search may miss neighbours: index -1, distance inf.
        """
        if len(self) == 0:
            raise ValueError("the index is empty.")
        q = np.asarray(queries, np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be [Q, {self.dim}], got {q.shape}.")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        k = min(int(k), len(self))
        if self.backend == "exact":
            return chunked_top_k(q, self.embeddings, k)
        d, i = self._faiss_index().search(np.ascontiguousarray(q), k)
        d = np.where(i >= 0, np.maximum(d, 0.0), np.inf).astype(np.float32)
        return d, i.astype(np.int64)

    def query(self, queries: np.ndarray, k: int) -> dict[str, np.ndarray]:
        """`search`, with Euclidean distances and the neighbours' labels / paths.

        Returns:
          {"indices" [Q, k], "distances" [Q, k] (Euclidean), and "labels" /
          "paths" [Q, k] when the index has them (-1 / "" for a missed one)}.
        """
        sq, idx = self.search(queries, k)
        out = {"indices": idx, "distances": np.sqrt(sq)}
        hit = idx >= 0
        safe = np.where(hit, idx, 0)
        if self.labels is not None:
            out["labels"] = np.where(hit, self.labels[safe], -1)
        if self.paths is not None:
            out["paths"] = np.where(hit, self.paths[safe], "")
        return out

    def classify(self, queries: np.ndarray, k: int = 5,
                 threshold: float | None = None) -> dict[str, np.ndarray]:
        """A k-nearest-neighbour classifier over the index's labels that may abstain.

        Each query's neighbours within `threshold` (Euclidean; e.g. a
        calibrated one, `sst_tf.calibration`) vote with their labels; the
        label with most votes wins, a tie going to the label of the closest
        voter. A query with no neighbour within the threshold gets `UNKNOWN`
        (an image of a class the index does not hold).

        Args:
          queries: [Q, d] embeddings.
          k: neighbours that may vote.
          threshold: the largest distance of a voter; None: all k vote.

        Returns:
          {"labels" [Q] (`UNKNOWN` = abstained), "votes" [Q] (the winner's
          votes, 0 when abstained), "distances" [Q] (the closest voter's,
          inf when abstained)}.

        Raises:
          ValueError: the index has no labels, or a negative threshold.
        """
        if self.labels is None:
            raise ValueError("classify needs an index with labels (add(..., labels=...)).")
        if threshold is not None and not threshold >= 0:
            raise ValueError(f"threshold must be a distance >= 0, got {threshold}.")
        found = self.query(queries, k)
        voting = found["indices"] >= 0
        if threshold is not None:
            voting &= found["distances"] <= threshold
        labels = np.full(len(voting), UNKNOWN, dtype=np.int64)
        votes = np.zeros(len(voting), np.int64)
        closest = np.full(len(voting), np.inf)
        for q in np.flatnonzero(voting.any(axis=1)):
            voters = found["labels"][q][voting[q]]  # nearest first
            names, counts = np.unique(voters, return_counts=True)
            best = names[counts == counts.max()]
            winner = next(v for v in voters if v in best)  # a tie: the closest voter's label
            labels[q], votes[q] = int(winner), int(counts.max())
            closest[q] = float(found["distances"][q][voting[q]][0])
        return {"labels": labels, "votes": votes, "distances": closest}

    def save(self, path: str) -> None:
        """Writes the index to `path` (.npz), atomically.

        Raises:
          FileExistsError: `path` exists and is not an index written here.
        """
        if os.path.exists(path) and not _is_our_file(path):
            raise FileExistsError(f"{path} exists and is not an index written by "
                                  "sst_tf.index: refusing to overwrite it.")
        arrays = {
            "format": np.asarray(FORMAT), "embeddings": self.embeddings,
            "backend": np.asarray(self.backend), "faiss_index": np.asarray(self.faiss_index),
            "faiss_params": np.asarray(self.faiss_params),
        }
        if self.labels is not None:
            arrays["labels"] = self.labels
        if self.paths is not None:
            arrays["paths"] = self.paths
        if self.backend == "faiss" and len(self):
            arrays["faiss_bytes"] = _require_faiss().serialize_index(self._faiss_index())
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".npz", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    @classmethod
    def load(cls, path: str, backend: str | None = None) -> EmbeddingIndex:
        """Reads an index written by `save` (or by `python -m sst_tf.embed`).

        Args:
          path: the .npz file.
          backend: override the saved backend (e.g. "exact" without faiss).

        Raises:
          FileNotFoundError / ValueError: naming the file when missing or not an index.
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist.")
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path} is not an .npz index ({e}).") from e
        with z:
            files = set(z.files)
            if "embeddings" not in files:
                raise ValueError(f"{path} is not an index (no embeddings).")
            saved = str(z["backend"]) if "backend" in files else "exact"
            index = cls(backend or saved,
                        str(z["faiss_index"]) if "faiss_index" in files else "HNSW32",
                        str(z["faiss_params"]) if "faiss_params" in files else "efSearch=128")
            index.embeddings = z["embeddings"].astype(np.float32)
            if index.embeddings.ndim != 2:
                raise ValueError(f"{path}: embeddings must be [n, d].")
            if "labels" in files:
                index.labels = z["labels"].astype(np.int64)
            if "paths" in files:
                index.paths = z["paths"].astype(str)
            if index.backend == "faiss" and saved == "faiss" and "faiss_bytes" in files:
                index._faiss = _require_faiss().deserialize_index(z["faiss_bytes"])
        return index
