import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector import ProjectorConfig

from sst_tf import projector as pj


def data(n=30, d=5, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 256, (n, 10, 10), dtype=np.uint8)
    return emb, labels, images


def read_config(folder):
    config = ProjectorConfig()
    with open(os.path.join(folder, "projector_config.pbtxt")) as f:
        text_format.Parse(f.read(), config)
    return config


def test_files_parse_and_match(tmp_path):
    emb, labels, images = data()
    names = [f"/data/x/img_{i}.jpg" for i in range(len(emb))]
    out = tmp_path / "projector"
    info = pj.write_projector(str(out), emb, labels, images, names, thumb_size=8)
    assert info["num_points"] == 30
    config = read_config(out)
    (e,) = config.embeddings
    assert e.tensor_name == pj.TENSOR_NAME and e.metadata_path == "metadata.tsv"
    assert list(e.sprite.single_image_dim) == [8, 8]
    # The checkpoint holds exactly one 2-D tensor: the embeddings.
    reader = tf.train.load_checkpoint(str(out))
    two_d = [k for k, s in reader.get_variable_to_shape_map().items() if len(s) == 2]
    assert two_d == [pj.TENSOR_NAME]
    np.testing.assert_array_equal(reader.get_tensor(pj.TENSOR_NAME), emb)
    rows = (out / "metadata.tsv").read_text().splitlines()
    assert rows[0] == "label\tfile"
    assert rows[1:] == [f"{labels[i]}\timg_{i}.jpg" for i in range(30)]
    sprite = np.asarray(Image.open(out / "sprite.png"))
    assert sprite.shape == (6 * 8, 6 * 8, 3)  # ceil(sqrt(30)) = 6 thumbnails a side
    # Thumbnail 7 sits at row 1, column 1; grayscale becomes equal RGB channels.
    thumb = np.asarray(Image.fromarray(images[7]).resize((8, 8), Image.BILINEAR))
    np.testing.assert_array_equal(sprite[8:16, 8:16, 0], thumb)
    np.testing.assert_array_equal(sprite[8:16, 8:16, 2], thumb)
    assert os.listdir(tmp_path) == ["projector"]


def test_seeded_sample_keeps_sprite_under_limit(tmp_path):
    emb, labels, images = data(n=100)
    assert pj.max_points_for_sprite(32) == (8192 // 32) ** 2
    assert pj.max_points_for_sprite(1000) == 64
    # A 64 px limit stands in for 8192 px: 8 x 8 thumbnails of 8 px fit.
    kw = dict(thumb_size=8, seed=3, sprite_limit_px=64)
    a = pj.write_projector(str(tmp_path / "a"), emb, labels, images, **kw)
    b = pj.write_projector(str(tmp_path / "b"), emb, labels, images, **kw)
    assert a["num_points"] == 64
    np.testing.assert_array_equal(a["indices"], b["indices"])
    assert len(set(a["indices"])) == 64
    assert Image.open(a["sprite"]).size == (64, 64)
    kept = a["indices"]
    reader = tf.train.load_checkpoint(str(tmp_path / "a"))
    np.testing.assert_array_equal(reader.get_tensor(pj.TENSOR_NAME), emb[kept])
    rows = (tmp_path / "a" / "metadata.tsv").read_text().splitlines()[1:]
    assert rows == [f"{labels[i]}\t{i}" for i in kept]
    # Without images there is no sprite and no cap but max_points.
    c = pj.write_projector(str(tmp_path / "c"), emb, labels, max_points=10)
    assert c["num_points"] == 10 and c["sprite"] is None
    assert not read_config(tmp_path / "c").embeddings[0].sprite.image_path


def test_bad_input(tmp_path):
    emb, labels, images = data()
    with pytest.raises(ValueError, match="labels"):
        pj.write_projector(str(tmp_path / "p"), emb, labels[:-1])
    with pytest.raises(ValueError, match="images"):
        pj.write_projector(str(tmp_path / "p"), emb, labels, images[:3])
    assert not os.path.exists(tmp_path / "p")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tensorboard_projector_plugin_serves_it(tmp_path):
    emb, labels, images = data()
    logdir = tmp_path / "model_dir"
    pj.write_projector(str(logdir / "projector"), emb, labels, images, thumb_size=8)
    # A training run's layout next to it: event files in train/, a checkpoint
    # with 2-D weights in checkpoints/. Only the projector run must show up.
    with tf.summary.create_file_writer(str(logdir / "train")).as_default():
        tf.summary.scalar("loss", 1.0, step=1)
    ckpt = tf.train.Checkpoint(kernel=tf.Variable(np.ones((3, 4), np.float32)))
    ckpt.save(str(logdir / "checkpoints" / "ckpt"))
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            f"--logdir={logdir}",
            f"--port={port}",
            "--host=127.0.0.1",
            "--load_fast=false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/data/plugin/projector"

    def get(route, **params):
        url = base + route + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read()

    try:
        deadline, runs = time.monotonic() + 60, None
        while runs is None and time.monotonic() < deadline:
            try:
                runs = json.loads(get("/runs"))
            except OSError:
                assert proc.poll() is None, "tensorboard exited"
                time.sleep(0.3)
        assert runs == ["projector"]
        info = json.loads(get("/info", run="projector"))
        (e,) = info["embeddings"]
        assert e["tensorName"] == pj.TENSOR_NAME and e["tensorShape"] == [30, 5]
        meta = get("/metadata", run="projector", name=e["tensorName"]).decode()
        assert meta.splitlines()[1] == f"{labels[0]}\t0"
        sprite = get("/sprite_image", run="projector", name=e["tensorName"])
        assert sprite == (logdir / "projector" / "sprite.png").read_bytes()
        tensor = np.frombuffer(get("/tensor", run="projector", name=e["tensorName"]), np.float32)
        np.testing.assert_allclose(tensor.reshape(30, 5), emb)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_thumbnails_from_arrays_and_files(tmp_path):
    rng = np.random.default_rng(0)
    ims = rng.integers(0, 256, (3, 6, 6, 3), dtype=np.uint8)
    paths = []
    for i, im in enumerate(ims):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(im).save(paths[-1])
    paths.append(str(tmp_path / "missing.png"))
    np.testing.assert_array_equal(pj.thumbnails(ims, [2, 0], 6), ims[[2, 0]])
    got = pj.thumbnails(paths, [2, 3, 0], 6)
    np.testing.assert_array_equal(got[[0, 2]], ims[[2, 0]])
    assert (got[1] == 128).all()  # unreadable file: grey tile
    gray = pj.thumbnails(ims[..., :1].astype(np.float32) / 255.0, [1], 6)
    np.testing.assert_array_equal(gray[0, ..., 1], ims[1, ..., 0])


def test_split_projector_with_files(tmp_path):
    from sst_tf import data

    rng = np.random.default_rng(1)
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"img{i}.jpg"))
        Image.fromarray(rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)).save(paths[-1])
    split = data.Split(np.array([0, 1, 1, 0, 1]), ("cat", "dog"), paths=tuple(paths))
    emb = rng.normal(size=(5, 3)).astype(np.float32)
    out = tmp_path / "projector"
    info = pj.write_split_projector(str(out), split, emb, thumb_size=4)
    rows = (out / "metadata.tsv").read_text().splitlines()
    assert rows == ["label\tfile"] + [
        f"{name}\timg{i}.jpg" for i, name in enumerate(["cat", "dog", "dog", "cat", "dog"])
    ]
    assert Image.open(info["sprite"]).size == (3 * 4, 3 * 4)
