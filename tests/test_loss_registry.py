"""Loss defaults: every loss has them with sources; flags override; cub.cfg is the paper's."""

import dataclasses
import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from sst_tf import loss_registry, losses
from sst_tf import train as train_cli
from sst_tf.config import LOSSES, SAMPLERS, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(*argv):
    """The `TrainConfig` the CLI builds from these arguments (flags reset afterwards)."""
    cwd = os.getcwd()
    os.chdir(ROOT)  # flag files name paths relative to the repository
    try:
        flags.FLAGS(["sst_tf.train", "--model_dir=unused", *argv])
        return train_cli.config_from_flags()
    finally:
        flags.FLAGS.unparse_flags()
        os.chdir(cwd)


def test_every_loss_has_documented_defaults_with_sources():
    assert set(loss_registry.LOSS_SPECS) == set(LOSSES)
    for name, spec in loss_registry.LOSS_SPECS.items():
        assert isinstance(spec.normalize, bool) and spec.sampler in SAMPLERS, name
        assert spec.sources.get("normalize") and spec.sources.get("sampler"), name
        if spec.margin is not None:
            assert spec.margin > 0 and spec.sources.get("margin"), name
        for param in spec.params:
            assert spec.sources.get(param), (name, param)
    # The parameters are real keyword arguments of the loss functions they feed.
    ms = inspect.signature(losses.multi_similarity_loss).parameters
    assert set(loss_registry.spec("multi_similarity").params) <= set(ms)
    pa = inspect.signature(losses.ProxyAnchor.__init__).parameters
    assert set(loss_registry.spec("proxy_anchor").params) <= set(pa)
    with pytest.raises(ValueError, match="--loss"):
        loss_registry.spec("nope")


@pytest.mark.parametrize("loss", ["triplet_hard", "multi_similarity", "lifted_struct", "sst"])
def test_loss_default_applies_when_the_flag_is_absent(loss):
    cfg = parse("--flagfile=configs/digits.cfg", f"--loss={loss}")
    assert cfg.normalize is None and cfg.sampler is None and cfg.margin is None  # unset
    spec = loss_registry.spec(loss)
    r = cfg.resolved()
    assert (r.normalize, r.sampler, r.margin, r.loss_lr_multiplier) == (
        spec.normalize, spec.sampler, spec.margin, spec.lr_multiplier)
    cfg.validate()  # digits.cfg fits every default sampler (10 classes x 10 images)


def test_given_flags_override_the_loss_defaults():
    r = parse("--flagfile=configs/digits.cfg", "--loss=triplet_hard", "--nonormalize",
              "--sampler=random", "--margin=0.3", "--loss_lr_multiplier=1").resolved()
    assert (r.normalize, r.sampler, r.margin, r.loss_lr_multiplier) == (False, "random", 0.3,
                                                                        1.0)
    r = parse("--flagfile=configs/digits.cfg", "--loss=sst", "--normalize").resolved()
    assert r.normalize is True and r.sampler == "local"
    # A flag file's value wins over the loss default, a later flag over the file.
    assert parse("--flagfile=configs/cub.cfg", "--loss=multi_similarity").resolved().normalize \
        is False
    assert parse("--flagfile=configs/cub.cfg", "--loss=multi_similarity",
                 "--normalize").resolved().normalize is True


def test_class_balanced_images_per_class_default_per_loss():
    from sst_tf.trainer import _make_sampler
    labels = np.repeat(np.arange(30), 6)
    for loss in ("pairwise_contrastive", "multi_similarity"):
        want = loss_registry.spec(loss).samples_per_class
        cfg = parse("--flagfile=configs/glyphs.cfg", f"--loss={loss}")
        assert cfg.samples_per_class is None  # unset: the loss's default
        r = cfg.resolved()
        assert r.samples_per_class == want
        assert loss_registry.settings(r)["samples_per_class"] == want
        sampler = _make_sampler(r, labels)
        assert (sampler.samples_per_class, sampler.classes_per_batch) == (want, 100 // want)
    # A flag file's value (digits.cfg: 10) and a given flag win over the loss's default.
    assert parse("--flagfile=configs/digits.cfg",
                 "--loss=pairwise_contrastive").resolved().samples_per_class == 10
    other = loss_registry.spec("pairwise_contrastive").samples_per_class + 1
    r = parse("--flagfile=configs/glyphs.cfg", "--loss=pairwise_contrastive",
              f"--samples_per_class={other}").resolved()
    assert r.samples_per_class == other
    # The default must still divide the batch: the error names the flag.
    with pytest.raises(ValueError, match="--batch_size must be a multiple .* "
                                         "--samples_per_class"):
        TrainConfig(model_dir="m", loss="pairwise_contrastive", batch_size=97).validate()


def test_margin_for_a_loss_without_one_is_refused():
    with pytest.raises(ValueError, match="--margin does not apply to --loss=npairs"):
        dataclasses.replace(TrainConfig(model_dir="m", loss="npairs", margin=0.5)).validate()


def test_cub_cfg_is_the_papers_recipe():
    c = parse("--flagfile=configs/cub.cfg")
    # Set explicitly in the file (not left to the loss defaults) ...
    assert (c.normalize, c.sampler, c.margin) == (False, "local", None)
    recipe = dict(dataset="cub", backbone="inception_v3", pretrained=True, embedding_dim=512,
                  normalize=False, image_size=224, resize_size=256, random_flip=True,
                  loss="sst", sampler="local", neighborhoods="original", batch_size=200,
                  num_targets=5, refresh_every=1, refresh="full", epochs=150, lr=1e-4,
                  head_lr_multiplier=10.0,
                  weight_decay=1e-4, decoupled_weight_decay=False, lr_patience=5,
                  lr_factor=0.5, early_stop_patience=15, recall_ks=(1, 2, 4, 8), seed=0,
                  loss_lr_multiplier=1.0)
    resolved = dataclasses.asdict(c.resolved())
    assert {k: resolved[k] for k in recipe} == recipe
    with open(os.path.join(ROOT, "configs", "cub.cfg")) as f:
        lines = f.read().splitlines()
    assert "--nonormalize" in lines and "--sampler=local" in lines


def test_dry_run_prints_the_resolved_settings():
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-m", "sst_tf.train", "--flagfile=configs/digits.cfg", "--dry_run",
         "--model_dir=unused", "--loss=proxy_anchor"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    spec = loss_registry.spec("proxy_anchor")
    assert (f"--loss=proxy_anchor: normalize {spec.normalize} (cosine geometry), sampler "
            f"{spec.sampler}, margin none, lr x {spec.lr_multiplier:g}, "
            f"alpha {spec.params['alpha']:g}, delta {spec.params['delta']:g}") in proc.stdout


def test_trainer_uses_the_loss_geometry_and_records_it(tmp_path, tiny):
    from sst_tf.trainer import Trainer

    cfg = TrainConfig(model_dir=str(tmp_path), backbone="small_cnn", pretrained=False,
                      embedding_dim=8, image_size=16, resize_size=16, random_flip=False,
                      loss="triplet_hard", samples_per_class=10, batch_size=50, epochs=1,
                      lr=1e-3, progress=False, export=False)
    trainer = Trainer(cfg, dataset=tiny)
    spec = loss_registry.spec("triplet_hard")
    assert (trainer.config.normalize, trainer.config.sampler) == (spec.normalize, spec.sampler)
    # Batch-hard trains at its factor of --lr unless --loss_lr_multiplier is given.
    assert float(trainer.step.backbone_optimizer.learning_rate) == pytest.approx(
        1e-3 * spec.lr_multiplier)
    assert float(trainer.step.head_optimizer.learning_rate) == pytest.approx(
        1e-3 * spec.lr_multiplier * cfg.head_lr_multiplier)
    metrics = trainer.fit()
    # Evaluation ranks the model's own outputs: unit vectors here.
    norms = np.linalg.norm(trainer.last_embeddings, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert metrics["settings"] == {"loss": "triplet_hard", "normalize": True,
                                   "geometry": "cosine", "sampler": "class_balanced",
                                   "margin": spec.margin,
                                   "loss_lr_multiplier": spec.lr_multiplier,
                                   "members_per_class": spec.members_per_class,
                                   "samples_per_class": 10, "params": {}}
    with open(tmp_path / "config.json") as f:
        saved = json.load(f)
    assert (saved["normalize"], saved["sampler"], saved["margin"]) == (True, "class_balanced",
                                                                       1.0)
    with open(tmp_path / "metrics.json") as f:
        assert json.load(f)["settings"]["geometry"] == "cosine"
    # Resuming with the flags unset resolves to the same values: accepted.
    again = Trainer(cfg, dataset=tiny)
    assert again.changed_flags == []
    # Asking for the other geometry on resume is refused (normalisation is a model flag).
    with pytest.raises(ValueError, match="normalize"):
        Trainer(dataclasses.replace(cfg, normalize=False), dataset=tiny)


def _doors_batch(n=24, d=8, classes=4, seed=0):
    """A batch whose rows are (unit) embeddings with targets, labels, a padding row."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = np.repeat(np.arange(classes), n // classes).astype(np.int32)
    t = np.full((n, 3), -1, np.int32)
    for i in range(n):  # same-class rows as targets
        same = [j for j in np.flatnonzero(y == y[i]) if j != i][:3]
        t[i, :len(same)] = same
    m = np.ones(n, bool)
    m[-1] = False
    return x, y, t, m


@pytest.fixture(scope="module")
def small_model():
    from sst_tf import model as model_lib

    return model_lib.build_model("small_cnn", weights=None, embedding_dim=8, image_size=16)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("normalize", [None, False])
def test_every_door_computes_the_same_loss_at_defaults(tiny, small_model, loss, normalize):
    """--loss=NAME, losses.make_loss(NAME) and fit's Keras loss: one value at defaults.

    The trainer's door is the step the trainer builds from the flags
    (`TrainConfig` -> validate -> resolved -> its loss layer and step).
    """
    from sst_tf import fit, trainer

    kw = {} if normalize is None else {"normalize": normalize}
    cfg = TrainConfig(model_dir="unused", backbone="small_cnn", pretrained=False,
                      embedding_dim=8, image_size=16, resize_size=16, batch_size=40,
                      samples_per_class=10, epochs=1, progress=False, loss=loss, **kw)
    cfg.validate()
    cfg = cfg.resolved()
    layer = trainer._make_loss_layer(cfg, tiny.train.labels)
    step = trainer._make_step(cfg, small_model, layer, num_replicas=1)
    x, y, t, m = _doors_batch()
    if cfg.normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if loss in loss_registry.WEIGHTED_LOSSES:
        # fit's door: the wrapper model owns the loss's weights; given the trainer's, it agrees.
        if loss == "proxy_anchor":
            wrapper = fit.ProxyAnchorModel(small_model, tiny.train.labels, seed=0)
            wrapper.proxy_weights.assign(layer.proxies / wrapper.lr_multiplier)
        else:
            wrapper = fit.MarginSoftmaxModel(small_model, loss, tiny.train.labels, seed=0)
            wrapper.head.stored_weights.assign(layer.class_weights / wrapper.lr_multiplier)
        ids = np.asarray(layer.class_ids)
        y = ids[y % len(ids)].astype(np.int32)
        keras_value = float(wrapper.compute_loss(y=fit.pack_targets(y, t, m), y_pred=x)) - sum(
            float(v) for v in wrapper.losses)
        function = float(losses.make_loss(loss, loss_layer=layer, normalize=normalize)(
            x, y, t, m))
    else:
        keras_value = float(fit.MetricLoss(loss, normalize=normalize)(fit.pack_targets(y, t, m),
                                                                       x))
        function = float(losses.make_loss(loss, normalize=normalize)(x, y, t, m))
    cli = float(step.loss_fn(x, y, t, m))
    assert np.isfinite(cli) and cli != 0.0
    np.testing.assert_allclose(keras_value, cli, rtol=1e-6)
    np.testing.assert_allclose(function, cli, rtol=1e-6)


def test_every_loss_is_found_by_its_registry_function_with_its_arguments():
    """The registry names each loss's function; its margin and parameters are its arguments."""
    registry = loss_registry
    for name, spec in registry.LOSS_SPECS.items():
        fn = losses.pure_function(name)
        assert fn is getattr(losses, spec.function), name
        accepted = inspect.signature(fn).parameters
        wanted = set(spec.params) | set(spec.raw_params) | (
            {"margin"} if spec.margin is not None else set())
        assert wanted <= set(accepted), (name, wanted - set(accepted))
        if name in registry.REFERENCE_LOSSES:
            assert "ref_embeddings" in accepted, name
