"""Loss options through the trainer (SST's, N-pairs' scale), and the collapse guard."""

import numpy as np
import pytest

from sst_tf import loss_registry, losses
from sst_tf.config import TrainConfig
from sst_tf.monitors import COLLAPSE_SPREAD, CollapseError, relative_spread
from sst_tf.trainer import Trainer

SST = loss_registry.spec("sst")
NPAIRS = loss_registry.spec("npairs")


def _config(tmp_path, **kw):
    base = dict(model_dir=str(tmp_path), backbone="small_cnn", pretrained=False,
                validation_share=0.0,  # every training image trains
                embedding_dim=8, image_size=16, resize_size=16, random_flip=False,
                batch_size=50, num_targets=3, epochs=1, lr=1e-3, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _sst_params(cfg):
    p = loss_registry.params(cfg.resolved())
    return {"scale": p["scale"], "imposters": p["imposters"]}


@pytest.mark.parametrize("normalize,scale,imposters,want", [
    (False, None, None, {"scale": 1.0, "imposters": "mean"}),  # the paper's loss
    (True, None, None, dict(SST.params)),  # the registry's form on unit vectors
    (True, 4.0, "mean", {"scale": 4.0, "imposters": "mean"}),
    (False, 1.0, "mean", {"scale": 1.0, "imposters": "mean"}),
])
def test_option_defaults_depend_on_normalisation(tmp_path, normalize, scale, imposters, want):
    cfg = _config(tmp_path, normalize=normalize, sst_scale=scale, sst_imposters=imposters)
    cfg.validate()
    assert _sst_params(cfg) == want


@pytest.mark.parametrize("kw,needle", [
    ({"sst_scale": 0.0, "normalize": True}, "--sst_scale must be > 0"),
    ({"sst_imposters": "max", "normalize": True}, "--sst_imposters must be one of"),
    ({"sst_scale": 16.0, "normalize": False}, "need --normalize"),  # raw: the paper's loss only
    ({"sst_imposters": "softmax", "normalize": False}, "need --normalize"),
    ({"sst_scale": 16.0, "loss": "triplet"}, "--sst_scale does not apply to --loss=triplet"),
])
def test_bad_sst_options_are_refused(tmp_path, kw, needle):
    with pytest.raises(ValueError, match=needle):
        _config(tmp_path, **kw).validate()


def test_trainer_loss_is_sst_loss_with_the_options(tmp_path, tiny):
    t = Trainer(_config(tmp_path, normalize=True), dataset=tiny)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 8)).astype(np.float32)
    y = np.repeat(np.arange(4), 3)
    tgt = np.array([[(i // 3) * 3 + (i + 1) % 3] for i in range(12)], np.int32)
    m = np.ones(12, bool)
    want = losses.sst_loss(x, y, tgt, scale=SST.params["scale"],
                           imposters=SST.params["imposters"])
    np.testing.assert_allclose(float(t.step.loss_fn(x, y, tgt, m)), float(want), rtol=1e-6)


@pytest.mark.parametrize("normalize,scale,want", [
    (None, None, NPAIRS.params["scale"]),  # npairs' registry default: unit vectors
    (False, None, 1.0),  # raw embeddings: Sohn's form
    (True, 2.5, 2.5),
])
def test_npairs_scale_default_depends_on_normalisation(tmp_path, normalize, scale, want):
    cfg = _config(tmp_path, loss="npairs", normalize=normalize, npairs_scale=scale,
                  sampler="class_balanced", samples_per_class=5)
    cfg.validate()
    cfg = cfg.resolved()
    assert loss_registry.settings(cfg)["params"]["scale"] == want


def test_trainer_npairs_loss_has_the_scale(tmp_path, tiny):
    t = Trainer(_config(tmp_path, loss="npairs", sampler="class_balanced",
                        samples_per_class=5), dataset=tiny)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 8))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    y = np.repeat(np.arange(4), 3)
    m = np.ones(12, bool)
    # Unit rows: the logits times s are the rows times sqrt(s); the penalty is l2_penalty / 2.
    penalty = 0.5 * NPAIRS.params["l2_penalty"]
    root = np.float32(np.sqrt(NPAIRS.params["scale"]))
    want = float(losses.batch_npairs_loss(x * root, y, m)) + penalty
    got = float(t.step.loss_fn(x, y, np.zeros((12, 0), np.int32), m))
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("loss,kw,want", [
    ("multi_similarity", {}, dict(loss_registry.spec("multi_similarity").params)),
    ("multi_similarity", {"ms_alpha": 0.01, "ms_beta": 40.0, "ms_base": 0.77},
     {"alpha": 0.01, "beta": 40.0, "base": 0.77, "epsilon": 0.1}),
    ("proxy_anchor", {"proxy_alpha": 16.0, "proxy_delta": 0.0}, {"alpha": 16.0, "delta": 0.0}),
])
def test_loss_parameter_flags_reach_settings(tmp_path, loss, kw, want):
    cfg = _config(tmp_path, loss=loss, sampler="class_balanced", samples_per_class=5, **kw)
    cfg.validate()
    assert loss_registry.settings(cfg.resolved())["params"] == want


@pytest.mark.parametrize("kw,needle", [
    ({"loss": "multi_similarity", "ms_alpha": 0.0}, "--ms_alpha must be > 0"),
    ({"loss": "multi_similarity", "ms_beta": -1.0}, "--ms_beta must be > 0"),
    ({"loss": "multi_similarity", "ms_base": 1.5}, "--ms_base must be <= 1"),
    ({"loss": "proxy_anchor", "proxy_alpha": 0.0}, "--proxy_alpha must be > 0"),
    ({"loss": "proxy_anchor", "proxy_delta": -0.1}, "--proxy_delta must be >= 0"),
    ({"loss": "proxy_anchor", "ms_beta": 40.0},
     "--ms_beta does not apply to --loss=proxy_anchor .only to --loss=multi_similarity"),
    ({"loss": "multi_similarity", "proxy_delta": 0.2},
     "--proxy_delta does not apply to --loss=multi_similarity"),
])
def test_bad_loss_parameter_flags_are_refused(tmp_path, kw, needle):
    with pytest.raises(ValueError, match=needle):
        _config(tmp_path, sampler="class_balanced", samples_per_class=5, **kw).validate()


def test_trainer_losses_use_the_parameter_flags(tmp_path, tiny):
    from test_losses_baselines import ms_reference, pa_reference
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 8)).astype(np.float32)
    y = np.repeat(np.arange(4), 3)
    m = np.ones(12, bool)
    none = np.zeros((12, 0), np.int32)
    common = dict(sampler="class_balanced", samples_per_class=5)
    t = Trainer(_config(tmp_path / "ms", loss="multi_similarity", ms_alpha=0.01, ms_beta=40.0,
                        ms_base=0.77, **common), dataset=tiny)
    want = ms_reference(x, y, alpha=0.01, beta=40.0, base=0.77)
    np.testing.assert_allclose(float(t.step.loss_fn(x, y, none, m)), want, rtol=1e-5)
    t = Trainer(_config(tmp_path / "pa", loss="proxy_anchor", proxy_alpha=16.0,
                        proxy_delta=0.0, **common), dataset=tiny)
    layer = t.loss_layer
    assert (layer.alpha, layer.delta) == (16.0, 0.0)
    ids = np.asarray(layer.class_ids)
    index = y % len(ids)  # proxy rows of the batch's (real) class ids
    labels = ids[index]
    want = pa_reference(x, index, np.asarray(layer.proxies), alpha=16.0, delta=0.0)
    np.testing.assert_allclose(float(t.step.loss_fn(x, labels, none, m)), want, rtol=1e-4)


def _collapsed(n):
    point = np.tile(np.eye(8, dtype=np.float32)[:1], (n, 1))
    spread = point + 1e-4 * np.random.default_rng(0).normal(size=point.shape)
    assert relative_spread(spread) < COLLAPSE_SPREAD
    return spread.astype(np.float32)


def test_collapse_stops_the_paper_sst_on_unit_vectors_with_the_flag(tmp_path, tiny):
    # The paper's SST form (scale 1, mean) on unit vectors: the real collapse.
    cfg = _config(tmp_path, normalize=True, sst_scale=1.0, sst_imposters="mean",
                  refresh="full", stop_on_collapse=True)
    t = Trainer(cfg, dataset=tiny)  # the full pass: every refresh embeds (the stub below)
    n = len(tiny.train)
    t.embed = lambda split, distributed=False: _collapsed(n)
    t.refresh_sampler(0)  # the untrained model is not checked
    with pytest.raises(CollapseError, match="collapsed after epoch 2.*--sst_scale well above "
                                            "1 .now 1;"):
        t.refresh_sampler(2)  # the refresh before the third epoch
    t.embed = lambda split, distributed=False: np.random.default_rng(1).normal(
        size=(n, 8)).astype(np.float32)
    t.refresh_sampler(2)  # spread out: no error


def test_collapse_is_a_warning_by_default_with_advice_for_the_run(tmp_path, tiny, caplog):
    from absl import logging as absl_logging
    t = Trainer(_config(tmp_path, normalize=True, refresh="full"), dataset=tiny)
    n = len(tiny.train)
    t.embed = lambda split, distributed=False: _collapsed(n)
    absl_logging.get_absl_logger().propagate = True
    with caplog.at_level("WARNING"):
        t.refresh_sampler(2)  # no error: the run goes on with the refreshed sampler
    text = caplog.text
    assert "collapsed after epoch 2" in text and "--stop_on_collapse" in text
    # At the default scale the advice is the rate, not the scale it already has.
    assert "--sst_scale" not in text and "--lr" in text
