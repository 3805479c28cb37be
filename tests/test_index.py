import importlib.util

import numpy as np
import pytest

from sst_tf import index as index_lib
from sst_tf.index import EmbeddingIndex

HAS_FAISS = importlib.util.find_spec("faiss") is not None


def _data(n=500, q=40, d=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    queries = rng.normal(size=(q, d)).astype(np.float32)
    return x, queries, rng.integers(0, 7, n)


def _brute(x, queries, k):
    d = ((queries[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


def test_exact_query_save_load_equal_brute_force(tmp_path):
    x, queries, labels = _data()
    paths = np.array([f"img/{i}.jpg" for i in range(len(x))])
    index = EmbeddingIndex()
    index.add(x[:300], labels=labels[:300], paths=paths[:300])
    index.add(x[300:], labels=labels[300:], paths=paths[300:])
    assert len(index) == 500 and index.dim == 16
    path = str(tmp_path / "sub" / "index.npz")
    index.save(path)
    index.save(path)  # its own file: replaced
    loaded = EmbeddingIndex.load(path)
    for idx in (index, loaded):
        found = idx.query(queries, k=10)
        want_d, want_i = _brute(x, queries, 10)
        np.testing.assert_array_equal(found["indices"], want_i)
        np.testing.assert_allclose(found["distances"] ** 2, want_d, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(found["labels"], labels[want_i])
        np.testing.assert_array_equal(found["paths"], paths[want_i])
    assert loaded.query(queries, k=10_000)["indices"].shape == (40, 500)  # k clipped


def test_refuses_to_overwrite_foreign_files_and_reports_bad_input(tmp_path):
    x, queries, _ = _data()
    index = EmbeddingIndex()
    index.add(x)
    foreign = tmp_path / "notes.npz"
    foreign.write_bytes(b"not mine")
    with pytest.raises(FileExistsError, match="refusing"):
        index.save(str(foreign))
    assert foreign.read_bytes() == b"not mine"
    other = tmp_path / "other.npz"
    np.savez(other, embeddings=x)
    with pytest.raises(FileExistsError):
        index.save(str(other))
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        EmbeddingIndex.load(str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="notes.npz"):
        EmbeddingIndex.load(str(foreign))
    with pytest.raises(ValueError, match="d=16"):
        index.add(np.zeros([2, 3]))
    with pytest.raises(ValueError, match="labels"):
        index.add(x[:2], labels=[0, 1])
    with pytest.raises(ValueError, match="queries"):
        index.search(queries[:, :3], 2)
    with pytest.raises(ValueError, match="empty"):
        EmbeddingIndex().search(queries, 1)
    with pytest.raises(ValueError, match="backend"):
        EmbeddingIndex("annoy")


def test_reads_the_embed_cli_format(tmp_path):
    x, queries, _ = _data(n=50)
    path = tmp_path / "embeddings.npz"
    np.savez(path, paths=np.array([f"{i}.png" for i in range(50)]), embeddings=x,
             export_dir=np.asarray("export"), failed=np.array([], str))
    found = EmbeddingIndex.load(str(path)).query(queries, 3)
    np.testing.assert_array_equal(found["indices"], _brute(x, queries, 3)[1])
    assert found["paths"][0, 0] == f"{found['indices'][0, 0]}.png"


def test_missing_faiss_names_the_package(monkeypatch):
    def missing(name):
        raise ImportError(name)

    index_lib._require_faiss.cache_clear()
    monkeypatch.setattr(index_lib.importlib, "import_module", missing)
    try:
        with pytest.raises(ImportError, match="pip install faiss-cpu"):
            EmbeddingIndex("faiss")
    finally:
        index_lib._require_faiss.cache_clear()


@pytest.mark.skipif(not HAS_FAISS, reason="faiss-cpu is not installed")
@pytest.mark.parametrize("spec,params", [("Flat", ""), ("HNSW32", "efSearch=64"),
                                         ("IVF8,Flat", "nprobe=8")])
def test_faiss_backend_agrees_with_exact_and_round_trips(tmp_path, spec, params):
    x, queries, labels = _data(n=2000, d=16)
    index = EmbeddingIndex("faiss", spec, params)
    index.add(x, labels=labels)
    want_d, want_i = _brute(x, queries, 10)
    d, i = index.search(queries, 10)
    # Flat and IVF probing every list are exact; HNSW at this size finds (almost) all.
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, want_i, strict=True)])
    assert recall >= (1.0 if spec != "HNSW32" else 0.95)
    np.testing.assert_allclose(d[i == want_i], want_d[i == want_i], rtol=1e-3, atol=1e-3)
    path = str(tmp_path / "faiss.npz")
    index.save(path)
    loaded = EmbeddingIndex.load(path)
    assert loaded.backend == "faiss" and loaded._faiss is not None  # not rebuilt
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], i)
    exact = EmbeddingIndex.load(path, backend="exact")
    np.testing.assert_array_equal(exact.search(queries, 10)[1], want_i)


def test_classify_votes_among_close_neighbours_and_abstains_when_none_is_close():
    from sst_tf.index import UNKNOWN, EmbeddingIndex

    index = EmbeddingIndex()
    index.add(np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.2], [5.0, 5.0], [5.1, 5.0]]),
              labels=[1, 1, 2, 7, 7])
    queries = np.array([[0.05, 0.0], [5.0, 5.05], [20.0, 20.0], [0.0, 0.15]])
    out = index.classify(queries, k=3, threshold=1.0)
    # (0.05, 0): two votes for 1 beat one for 2; 7 from its two; nothing within 1.0 of
    # (20, 20); (0, 0.15): its closest is label 2, but labels 1 have two votes.
    np.testing.assert_array_equal(out["labels"], [1, 7, UNKNOWN, 1])
    np.testing.assert_array_equal(out["votes"], [2, 2, 0, 2])
    assert out["distances"][2] == np.inf and out["distances"][0] == pytest.approx(0.05)
    # Without a threshold every neighbour votes: (20, 20) gets 7.
    assert index.classify(queries[2:3], k=2)["labels"][0] == 7
    # A tie (one vote each) goes to the closer voter's label.
    assert index.classify(np.array([[0.0, 0.15]]), k=2)["labels"][0] == 2
    with pytest.raises(ValueError, match="labels"):
        unlabelled = EmbeddingIndex()
        unlabelled.add(np.zeros((2, 2)))
        unlabelled.classify(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="distance >= 0"):
        index.classify(queries, threshold=-1.0)
