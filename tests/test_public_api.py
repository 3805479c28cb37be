"""The examples of docs/api.md, on small data, through the public names only.

Each result is checked against an independent NumPy computation written here
(explicit triplets, brute-force neighbours) or against another public path to
the same number (the trainer's embedding pass against the exported model).
"""

import itertools
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sst_tf import data, embed, evaluation, export, losses, neighbors, sampling, search
from sst_tf.config import TrainConfig
from sst_tf.trainer import Trainer


def _sq_dist(x):
    x = np.asarray(x, np.float64)
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def _softplus(z):
    return np.logaddexp(0.0, z)


# -- losses ---------------------------------------------------------------------


def test_losses_example_matches_explicit_triplets():
    rng = np.random.default_rng(0)
    emb = tf.Variable(rng.normal(size=(12, 8)).astype("float32"))
    labels = np.repeat([0, 1, 2], 4)
    targets = neighbors.target_neighbors(emb.numpy(), labels, k=2)
    with tf.GradientTape() as tape:
        loss = losses.sst_loss(emb, labels, targets)
    grad = tape.gradient(loss, emb)
    assert grad.shape == (12, 8) and np.isfinite(grad.numpy()).all()

    d = _sq_dist(emb.numpy())
    # Targets: the 2 nearest other rows of the same class, by brute force.
    for a in range(12):
        mates = [j for j in range(12) if j != a and labels[j] == labels[a]]
        want = sorted(mates, key=lambda j: (d[a, j], j))[:2]
        assert list(targets[a]) == want
    sst, trip = [], []
    for a, t, i in itertools.product(range(12), range(12), range(12)):
        if t in targets[a] and labels[i] != labels[a]:
            sst.append(_softplus(d[a, t] - (d[a, i] + d[t, i]) / 2))
            trip.append(max(0.0, d[a, t] + 0.2 - d[a, i]))
    assert float(loss) == pytest.approx(np.mean(sst), rel=1e-5)
    assert float(losses.triplet_loss(emb, labels, targets)) == pytest.approx(np.mean(trip),
                                                                             rel=1e-5)
    same = labels[:, None] == labels[None, :]
    contrastive = np.where(same, d, np.maximum(0.0, 0.5 - d)).sum() / 12
    assert float(losses.contrastive_loss(emb, labels)) == pytest.approx(contrastive, rel=1e-5)
    assert np.isfinite(float(losses.multi_similarity_loss(emb, labels)))


# -- samplers -------------------------------------------------------------------


def test_sampler_example_plans_valid_batches():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 20)
    embeddings = rng.normal(size=(200, 16)) + labels[:, None]
    sampler = sampling.LocalSampler(labels, batch_size=50, num_targets=3, seed=0)
    sampler.refresh(embeddings, epoch=0)
    plan = sampler.plan(epoch=0)
    assert plan.indices.shape == (plan.num_batches, 50)
    assert plan.targets.shape == (plan.num_batches, 50, 3)
    assert 0 < plan.stats["coverage"] <= 1
    for idx, tgt, mask in zip(plan.indices, plan.targets, plan.mask, strict=True):
        rows = np.flatnonzero(mask)
        assert len(set(idx[rows])) == len(rows)  # no image twice in a batch
        d = _sq_dist(embeddings[idx])
        for a in rows:
            mates = [j for j in rows if j != a and labels[idx[j]] == labels[idx[a]]]
            want = sorted(mates, key=lambda j: (d[a, j], j))[:3]
            got = [t for t in tgt[a] if t >= 0]
            assert got == want
    # The same plan again from the same seed and embeddings.
    again = sampling.make_sampler("local", labels, 50, num_targets=3, seed=0,
                                  neighborhoods="original")
    again.refresh(embeddings, epoch=0)
    np.testing.assert_array_equal(again.plan(0).indices, plan.indices)

    balanced = sampling.ClassBalancedSampler(labels, 50, samples_per_class=5, seed=0)
    balanced.refresh(embeddings, epoch=0)
    for idx, mask in zip(balanced.plan(0).indices, balanced.plan(0).mask, strict=True):
        _, counts = np.unique(labels[idx[mask]], return_counts=True)
        assert list(counts) == [5] * 10


# -- metrics --------------------------------------------------------------------


def test_metrics_example_matches_brute_force():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(5), 10)
    embeddings = rng.normal(size=(50, 8)) + 0.7 * labels[:, None]
    d = _sq_dist(embeddings)
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")
    hits = labels[order] == labels[:, None]
    recall = evaluation.recall_at_k(embeddings, labels, ks=(1, 4))
    assert recall[1] == pytest.approx(hits[:, 0].mean())
    assert recall[4] == pytest.approx(hits[:, :4].any(1).mean())
    r = 9  # other images per class
    precision_at = np.cumsum(hits[:, :r], 1) / np.arange(1, r + 1)
    map_r = (precision_at * hits[:, :r]).sum(1).mean() / r
    out = evaluation.evaluate(embeddings, labels, ks=(1, 2))
    assert out["map@r"] == pytest.approx(map_r, rel=1e-5)
    assert out["r_precision"] == pytest.approx(hits[:, :r].mean(), rel=1e-5)
    assert 0 <= out["nmi"] <= 1 and out["num_queries"] == 50


# -- trainer, export, embedding, search ------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    digits = data.load_dataset("digits")
    tiny = data.Dataset("digits", data.subset(digits.train, range(0, 800, 4)),
                        data.subset(digits.test, range(0, 800, 8)))
    config = TrainConfig(model_dir=str(tmp_path_factory.mktemp("run")), dataset="digits",
                         validation_share=0.0,  # every training image trains
                         backbone="small_cnn", pretrained=False, embedding_dim=8,
                         image_size=16, resize_size=18, random_flip=False, batch_size=50,
                         num_targets=3, epochs=1, lr=1e-3, head_lr_multiplier=1.0,
                         progress=False)
    trainer = Trainer(config, dataset=tiny)
    return trainer, trainer.fit()


def test_trainer_example_fits_and_writes_metrics(trained):
    trainer, metrics = trained
    with open(os.path.join(trainer.config.model_dir, "metrics.json")) as f:
        assert json.load(f)["after"] == pytest.approx(metrics["after"])
    test = trainer.dataset.test
    emb = trainer.embed(test)
    assert emb.shape == (len(test), 8)
    want = evaluation.evaluate(emb, test.labels)
    assert metrics["after"]["recall@1"] == pytest.approx(want["recall@1"])
    assert metrics["after"]["map@r"] == pytest.approx(want["map@r"], rel=1e-5)


def test_export_embed_search_example(trained, tmp_path):
    trainer, _ = trained
    path = export.export_run(trainer.config.model_dir, export_dir=str(tmp_path / "export"))
    assert export.load_export_info(path)["embedding_dim"] == 8

    test = trainer.dataset.test
    files = []
    for i, image in enumerate(test.images[:6]):
        files.append(str(tmp_path / f"{i}.png"))
        tf.io.write_file(files[-1], tf.io.encode_png(image))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    embedder = embed.Embedder(path)
    kept, vectors, failed = embed.embed_files(embedder, files + [str(tmp_path / "broken.png")],
                                              batch_size=4, progress=False)
    assert kept == files and [p for p, _ in failed] == [str(tmp_path / "broken.png")]
    # PNG is lossless: the export gives the trainer's own embeddings.
    np.testing.assert_allclose(vectors, trainer.embed(test)[:6], atol=1e-5)

    embed.save_index(str(tmp_path / "index.npz"), kept, vectors, export_dir=path)
    index = embed.load_index(str(tmp_path / "index.npz"))
    np.testing.assert_array_equal(index["embeddings"], vectors)
    distances, indices = search.chunked_top_k(vectors[:2], index["embeddings"], k=3)
    d = _sq_dist(vectors)[:2]
    np.testing.assert_array_equal(indices, np.argsort(d, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(distances, np.sort(d, axis=1)[:, :3], atol=1e-4)
