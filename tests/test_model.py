import keras
import numpy as np
import pytest
import tensorflow as tf

from sst_tf import config, losses, model


def _one_step(m, images, labels):
    targets = np.array([[1], [0], [3], [2]], np.int32)
    opt = keras.optimizers.Adam(1e-3)
    before = [v.numpy().copy() for v in m.trainable_variables]
    with tf.GradientTape() as tape:
        emb = m(images, training=True)
        loss = losses.sst_loss(emb, labels, targets)
    grads = tape.gradient(loss, m.trainable_variables)
    assert all(g is not None for g in grads)
    opt.apply_gradients(zip(grads, m.trainable_variables, strict=True))
    assert np.isfinite(float(loss))
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, m.trainable_variables,
                                                                strict=True)]
    return emb, changed


def test_inception_v3_small_input_one_train_step():
    m = model.build_model("inception_v3", weights=None, embedding_dim=8, image_size=75)
    images = tf.random.uniform((4, 75, 75, 3), 0, 255, seed=0)
    emb, changed = _one_step(m, images, tf.constant([0, 0, 1, 1]))
    assert emb.shape == (4, 8)
    assert all(changed[-2:]) and sum(changed) > len(changed) // 2
    backbone, head = model.variable_groups(m)
    assert [v.path for v in head] == [v.path for v in m.get_layer("head").trainable_variables]
    assert len(backbone) + len(head) == len(m.trainable_variables)
    # InceptionV3's preprocessing maps 0..255 to [-1, 1].
    pre = m.get_layer("preprocess")(tf.constant([[[[0.0, 127.5, 255.0]]]]))
    np.testing.assert_allclose(pre.numpy().ravel(), [-1.0, 0.0, 1.0], atol=1e-6)


def test_small_cnn_normalized():
    m = model.build_model("small_cnn", weights=None, embedding_dim=6, normalize=True,
                          image_size=16)
    images = tf.random.uniform((4, 16, 16, 3), 0, 255, seed=1)
    emb, changed = _one_step(m, images, tf.constant([0, 0, 1, 1]))
    np.testing.assert_allclose(np.linalg.norm(emb.numpy(), axis=1), 1.0, atol=1e-5)
    assert all(changed)
    assert m.output.dtype == "float32"


def test_bad_arguments():
    with pytest.raises(ValueError, match="backbone"):
        model.build_model("vgg", weights=None)
    with pytest.raises(ValueError, match="image_size must be >= 75"):
        model.build_model("inception_v3", weights=None, image_size=64)
    with pytest.raises(ValueError, match="pretrained"):
        model.build_model("small_cnn", weights="imagenet", image_size=16)
    with pytest.raises(ValueError, match="embedding_dim"):
        model.build_model("small_cnn", weights=None, embedding_dim=0, image_size=16)


def test_backbone_names_match_config():
    assert tuple(sorted(model.BACKBONES)) == tuple(sorted(config.BACKBONES))


def test_backbone_weights_file_round_trip_and_errors_name_the_flag(tmp_path):
    keras.utils.set_random_seed(1)
    a = model.build_model("small_cnn", weights=None, embedding_dim=6, image_size=16)
    path = str(tmp_path / "a.weights.h5")
    model.save_backbone_weights(a, path)
    keras.utils.set_random_seed(2)
    b = model.build_model("small_cnn", weights=None, embedding_dim=6, image_size=16,
                          backbone_weights=path)
    want = a.get_layer(model.BACKBONE_LAYER).get_weights()
    got = b.get_layer(model.BACKBONE_LAYER).get_weights()
    assert len(got) == len(want) > 0
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g, w)
    # The head is not part of the file: it starts from the new seed.
    assert not np.array_equal(a.get_layer("head").get_weights()[0],
                              b.get_layer("head").get_weights()[0])
    with pytest.raises(ValueError, match="--backbone_weights=.*is not a file"):
        model.build_model("small_cnn", weights=None, image_size=16,
                          backbone_weights=str(tmp_path / "missing.weights.h5"))
    other = model.build_model("mobilenet_v2", weights=None, embedding_dim=6, image_size=32)
    other_path = str(tmp_path / "mobilenet.weights.h5")
    model.save_backbone_weights(other, other_path)
    with pytest.raises(ValueError, match="--backbone_weights=.*does not fit backbone 'small_cnn'"):
        model.build_model("small_cnn", weights=None, image_size=16, backbone_weights=other_path)
    with pytest.raises(ValueError, match="replaces weights='imagenet'"):
        model.build_model("small_cnn", weights="imagenet", image_size=16, backbone_weights=path)


def test_head_batchnorm_sits_between_the_head_and_the_l2_normalisation():
    m = model.build_model("small_cnn", weights=None, embedding_dim=8, image_size=16,
                          normalize=True, embedding_batchnorm=True)
    names = [layer.name for layer in m.layers]
    assert names.index("head") < names.index("head_batchnorm") < names.index("l2_normalize")
    _, head = model.variable_groups(m)  # the head's learning rate covers its batch norm
    assert {v.path for v in m.get_layer("head_batchnorm").trainable_variables} <= {
        v.path for v in head}
    plain = model.build_model("small_cnn", weights=None, embedding_dim=8, image_size=16)
    assert "head_batchnorm" not in [layer.name for layer in plain.layers]


@pytest.mark.parametrize("loss", ["arcface", "cosface", "subcenter_arcface"])
def test_margin_losses_train_digits_from_a_random_backbone(tmp_path, loss):
    """The digits demo's setting (small CNN from scratch, the loss's registry defaults,
    its head batch norm included) trains above the untrained model within 8 epochs."""
    from sst_tf import data
    from sst_tf.trainer import TrainConfig, Trainer

    digits = data.load_dataset("digits", upscale=2)
    cfg = TrainConfig(model_dir=str(tmp_path), backbone="small_cnn", pretrained=False,
                      image_size=16, resize_size=18, random_flip=False, embedding_dim=64,
                      loss=loss, batch_size=100, epochs=8, lr=2e-3, head_lr_multiplier=1.0,
                      weight_decay=1e-4, eval_every=100, progress=False, calibrate=False,
                      validation_share=0.0, export=False)
    trainer = Trainer(cfg, dataset=digits)
    assert trainer.config.embedding_batchnorm  # the registry's default for the loss
    metrics = trainer.fit()
    assert metrics["after"]["map@r"] > metrics["before"]["map@r"] + 0.1, metrics
