"""Retrieval metrics vs brute-force NumPy on full distance matrices."""

import numpy as np
import pytest
import tensorflow as tf
from _clustered import gaussian_classes
from sklearn.metrics import normalized_mutual_info_score

from sst_tf import evaluation, kmeans


def brute_ranking(x, labels):
    """Full N x N float64 distances; order by (distance, index), self removed."""
    x = x.astype(np.float64)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    n = len(labels)
    ranks = []
    for q in range(n):
        order = sorted((j for j in range(n) if j != q), key=lambda j: (d[q, j], j))
        ranks.append(np.array([labels[j] == labels[q] for j in order]))
    return ranks


def brute_metrics(x, labels, ks):
    ranks = brute_ranking(x, labels)
    rec = {k: float(np.mean([r[:k].any() for r in ranks])) for k in ks}
    aps, rps, skipped = [], [], 0
    for r in ranks:
        big_r = int(r.sum())
        if big_r == 0:
            skipped += 1
            continue
        hits = r[:big_r]
        prec = np.cumsum(hits) / np.arange(1, big_r + 1)
        aps.append(float((prec * hits).sum() / big_r))
        rps.append(float(hits.sum() / big_r))
    return rec, float(np.mean(aps)), float(np.mean(rps)), skipped


def int_set(seed, n=60, d=3):
    """Small-integer embeddings (exact distances, many ties), uneven classes and singletons."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    labels = np.concatenate([rng.integers(0, 6, n - 4), [100, 101, 102, 103]])
    rng.shuffle(labels)
    return x, labels


@pytest.mark.parametrize("seed", range(3))
def test_matches_brute_force_with_ties_and_singletons(seed):
    x, labels = int_set(seed)
    ks = (1, 2, 4, 8, 100)
    rec, mapr, rp, skipped = brute_metrics(x, labels, ks)
    assert skipped == 4
    for chunk in (None, 1, 7, 60):
        out = evaluation.evaluate(x, labels, ks, chunk_size=chunk, with_nmi=False)
        assert out["num_queries_skipped"] == 4 and out["num_queries"] == 60
        for k in ks:
            assert out[f"recall@{k}"] == pytest.approx(rec[k], abs=1e-12)
        assert out["map@r"] == pytest.approx(mapr, abs=1e-6)
        assert out["r_precision"] == pytest.approx(rp, abs=1e-6)


def test_chunked_equals_unchunked_random_floats():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(150, 16)).astype(np.float32)
    labels = rng.integers(0, 12, 150)
    full = evaluation.evaluate(x, labels, (1, 5, 10), chunk_size=150, with_nmi=False)
    for chunk in (1, 13, 64):
        assert evaluation.evaluate(x, labels, (1, 5, 10), chunk_size=chunk,
                                   with_nmi=False) == full
    rec, mapr, rp, _ = brute_metrics(x, labels, (1, 5, 10))
    assert [full[f"recall@{k}"] for k in (1, 5, 10)] == pytest.approx([rec[1], rec[5], rec[10]])
    assert full["map@r"] == pytest.approx(mapr, abs=1e-6)
    assert full["r_precision"] == pytest.approx(rp, abs=1e-6)


def test_individual_functions_agree_with_evaluate():
    x, labels = int_set(7)
    out = evaluation.evaluate(x, labels, (1, 3), seed=3)
    assert set(out) == {"recall@1", "recall@3", "map@r", "r_precision", "nmi",
                        "num_queries", "num_queries_skipped"}
    assert evaluation.recall_at_k(x, labels, (1, 3)) == {1: out["recall@1"], 3: out["recall@3"]}
    assert evaluation.map_at_r(x, labels) == out["map@r"]
    assert evaluation.r_precision(tf.constant(x), tf.constant(labels)) == out["r_precision"]
    assert evaluation.nmi(x, labels, seed=3) == out["nmi"]


def test_perfectly_separated_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], np.float32)
    labels = np.repeat(np.arange(4), 10)
    x = centers[labels] + rng.normal(scale=0.1, size=(40, 2)).astype(np.float32)
    out = evaluation.evaluate(x, labels, (1, 2))
    assert out["recall@1"] == out["recall@2"] == 1.0
    assert out["map@r"] == pytest.approx(1.0) and out["r_precision"] == pytest.approx(1.0)
    assert out["nmi"] == pytest.approx(1.0)
    assert out["num_queries_skipped"] == 0


def test_hand_made_ranking():
    # Query 0 at 0.0; its neighbours in order: 1 (label b), 2 (a), 3 (a); R = 2 for label a.
    x = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]], np.float32)
    labels = np.array(["a", "b", "a", "a", "c"])
    stats = evaluation.retrieval_stats(x, labels, (1, 2))
    # Per query (R, hits within R): q0 R=2 [F,T] AP=.25 RP=.5; q2 R=2 nbrs 1,3 -> [F,T]
    # AP=.25 RP=.5; q3 R=2 nbrs 2,1 -> [T,F] AP=.5 RP=.5; q1, q4 skipped (singletons).
    assert stats["num_queries_skipped"] == 2
    assert stats["map@r"] == pytest.approx((0.25 + 0.25 + 0.5) / 3)
    assert stats["r_precision"] == pytest.approx(0.5)
    # Recall@1: q0 no (1 is b), q1 no, q2 no (tie 1 vs 3 at distance 1 -> lower index 1), q3
    # yes, q4 no. Recall@2: q0, q2, q3 yes.
    assert stats["recall"] == {1: pytest.approx(0.2), 2: pytest.approx(0.6)}


def test_k_larger_than_n_and_single_class():
    x = np.arange(5, dtype=np.float32)[:, None]
    rec = evaluation.recall_at_k(x, [0, 0, 1, 1, 2], (1, 50))
    assert rec[50] == pytest.approx(0.8)  # the singleton never hits
    assert evaluation.map_at_r(x, np.zeros(5)) == 1.0


def test_nmi_matches_sklearn_reference():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    labels = rng.integers(0, 5, 80)
    from sklearn.cluster import KMeans
    pred = KMeans(n_clusters=5, random_state=0, n_init=1).fit_predict(x)
    want = normalized_mutual_info_score(labels, pred, average_method="arithmetic")
    assert evaluation.nmi(x, labels, seed=0, kmeans="sklearn") == pytest.approx(want)
    got = evaluation.evaluate(x, labels, (1,), seed=0, kmeans="sklearn")["nmi"]
    assert got == evaluation.nmi(x, labels, seed=0, kmeans="sklearn")


def test_nmi_tf_kmeans_close_to_sklearn():
    x, labels = gaussian_classes()
    tf_nmi = [evaluation.nmi(x, labels, seed=s) for s in range(2)]  # kmeans="tf" by default
    sk_nmi = [evaluation.nmi(x, labels, seed=s, kmeans="sklearn") for s in range(2)]
    assert 0.8 < np.mean(sk_nmi) < 0.97  # a clustering that is not trivially perfect
    assert np.mean(tf_nmi) == pytest.approx(np.mean(sk_nmi), abs=0.02)
    assert evaluation.nmi(x, labels, seed=0) == tf_nmi[0]  # deterministic for a seed


def test_nmi_tf_is_the_tf_kmeans_clustering_scored():
    x, labels = gaussian_classes(n=300, classes=50)
    runs = [kmeans.tf_kmeans(x, 50, seed=s, max_iter=300) for s in (4, 5)]
    want = [normalized_mutual_info_score(labels, r.labels) for r in runs]
    assert evaluation.nmi(x, labels, seed=4) == pytest.approx(want[0])
    best = int(np.argmin([r.inertia for r in runs]))
    assert evaluation.nmi(x, labels, seed=4, n_init=2) == pytest.approx(want[best])
    out = evaluation.evaluate(x, labels, (1,), seed=4)
    assert out["nmi"] == pytest.approx(want[0])


def test_bad_input_raises_naming_argument():
    x, labels = int_set(0)
    with pytest.raises(ValueError, match="embeddings"):
        evaluation.evaluate(x[0], labels[:1], (1,))
    with pytest.raises(ValueError, match="labels"):
        evaluation.recall_at_k(x, labels[:-1])
    with pytest.raises(ValueError, match="labels"):
        evaluation.map_at_r(x, labels[:, None])
    with pytest.raises(ValueError, match="ks"):
        evaluation.recall_at_k(x, labels, (0, 1))
    with pytest.raises(ValueError, match="empty"):
        evaluation.evaluate(x[:0], labels[:0], (1,))
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluation.evaluate(bad, labels, (1,))
    with pytest.raises(ValueError, match="NaN"):
        evaluation.nmi(bad, labels)
    with pytest.raises(ValueError, match="kmeans"):
        evaluation.nmi(x, labels, kmeans="faiss")
    with pytest.raises(ValueError, match="kmeans"):
        evaluation.evaluate(x, labels, (1,), kmeans="faiss")
    with pytest.raises(ValueError, match="chunk_size"):
        evaluation.recall_at_k(x, labels, (1,), chunk_size=0)


def test_one_class_is_refused_rather_than_scored_perfect():
    emb = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="1 class.*at least 2"):
        evaluation.evaluate(emb, np.zeros(10, int))
    assert evaluation.evaluate(emb, np.arange(10) % 2)["map@r"] < 1.0
