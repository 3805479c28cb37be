import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from sst_tf import distribute

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    env.update(extra)
    return env


def test_mirrored_two_devices_equals_one_device(tmp_path):
    # Two steps: MirroredStrategy, each of 2 replicas on one batch, vs one device
    # on the mean loss of the same 2 batches (same start weights).
    out = subprocess.run([sys.executable, str(HERE / "_mirrored_check.py"), str(tmp_path)],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["replicas"] == 2
    np.testing.assert_allclose(r["mirrored"], r["single"], rtol=1e-5)
    # Weights moved by ~1e-3 per step; the two computations agree to float32
    # round-off (<= 1e-5 absolute), while summing instead of averaging the
    # replica gradients would be off by far more.
    assert r["moved"] > 1e-3
    assert r["mirrored_vs_single"] < 1e-5
    assert r["summed_vs_single"] > 100 * max(r["mirrored_vs_single"], 1e-7)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_two_processes_agree(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, str(HERE / "_multiworker_worker.py"), str(tmp_path / "run"),
             str(tmp_path / f"w{i}.npz")],
            env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    try:
        results = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    w0, w1 = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    assert bool(w0["chief"]) and not bool(w1["chief"])
    assert int(w0["replicas"]) == 2 and int(w0["epochs"]) == int(w1["epochs"]) == 2
    assert bool(w0["after"]) and not bool(w1["after"])  # only the chief evaluates
    names = [k for k in w0.files if k.startswith("w")]
    for k in names:
        np.testing.assert_array_equal(w0[k], w1[k])
    # Only the chief wrote files; worker 1's temporary checkpoints are gone.
    run = tmp_path / "run"
    assert (run / "metrics.json").exists()
    ckpt = run / "checkpoints"
    assert tf.train.latest_checkpoint(str(ckpt)).endswith("-2")
    assert not [p for p in ckpt.iterdir() if p.name.startswith("workertemp")]
    assert (run / "export").is_dir()  # the chief's SavedModel


def test_default_strategy_roles(tmp_path):
    s = distribute.make_strategy("default")
    assert distribute.is_chief(s) and distribute.worker_dir(str(tmp_path), s) == str(tmp_path)
    with pytest.raises(ValueError, match="--strategy"):
        distribute.make_strategy("tpu")


def _replica_step(images, labels, targets, mask):
    """A stand-in for `step.TrainStep`: (loss, embeddings) of one replica's batch."""
    embeddings = tf.reduce_mean(images, axis=[1, 2])
    return tf.reduce_mean(embeddings), embeddings


def test_cross_replica_step_on_one_device():
    s = distribute.make_strategy("default")
    images = tf.reshape(tf.range(4 * 2 * 2 * 3, dtype=tf.float32), [4, 2, 2, 3])
    labels, targets = tf.zeros([4], tf.int32), tf.zeros([4, 1], tf.int32)
    mask = tf.constant([True, True, False, True])
    want_loss, want_emb = _replica_step(images, labels, targets, mask)
    step = tf.function(distribute.cross_replica_step(s, _replica_step))
    assert float(step((images, labels, targets, mask))) == pytest.approx(float(want_loss))
    with_embeddings = tf.function(distribute.cross_replica_step_with_embeddings(s, _replica_step))
    indices = tf.constant([7, 8, 9, 10], tf.int64)
    loss, emb, idx = with_embeddings((images, labels, targets, mask, indices))
    assert float(loss) == pytest.approx(float(want_loss))
    np.testing.assert_allclose(emb.numpy(), want_emb.numpy())
    np.testing.assert_array_equal(idx.numpy(), [7, 8, -1, 10])  # -1: the padding row
