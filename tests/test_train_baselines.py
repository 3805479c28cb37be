"""Every loss trains under MirroredStrategy on two logical CPUs; compare.py runs."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One subprocess for all losses: logical devices must be set before TF starts.
MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from sst_tf import data as data_lib, pipeline
    from sst_tf.config import LOSSES, TrainConfig
    from sst_tf.trainer import Trainer, make_loss

    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    dataset = data_lib.load_dataset("digits")

    def config(loss):
        return TrainConfig(
            model_dir=sys.argv[1] + "/" + loss, backbone="small_cnn", pretrained=False,
            image_size=16, resize_size=16, random_flip=False, embedding_dim=16, loss=loss,
            sampler="class_balanced", samples_per_class=4, batch_size=20, epochs=1,
            lr=1e-3, progress=False)

    # One trainer for the losses without weights (the loss function is swapped,
    # the step retraced), one for Proxy-Anchor (its proxies are trainer state).
    trainers = {"sst": Trainer(config("sst"), dataset=dataset, strategy=strategy),
                "proxy_anchor": Trainer(config("proxy_anchor"), dataset=dataset,
                                        strategy=strategy)}
    sampler = trainers["sst"].sampler  # computes target tables for sst / triplet
    sampler.refresh(trainers["sst"].embed(dataset.train), 0)
    plan = sampler.plan(0)
    ds = pipeline.train_dataset(dataset.train, plan, trainers["sst"].image_options).take(2)
    batches = list(ds)
    # One whole plan batch per replica (targets index into their own batch).
    batch = strategy.experimental_distribute_values_from_function(
        lambda ctx: batches[ctx.replica_id_in_sync_group])
    out = {}
    for loss in LOSSES:
        start = time.perf_counter()
        trainer = trainers.get(loss, trainers["sst"])
        if loss != "proxy_anchor":
            trainer.loss_fn = make_loss(loss, None)
        watched = trainer.head_vars + trainer.loss_vars
        before = [v.numpy().copy() for v in watched]
        value = float(tf.function(trainer.distributed_step)(batch))
        changed = [bool(np.any(v.numpy() != b)) for v, b in zip(watched, before)]
        out[loss] = {"loss": value, "changed": changed,
                     "replicas": strategy.num_replicas_in_sync,
                     "proxies": [list(v.shape) for v in trainer.loss_vars],
                     "seconds": time.perf_counter() - start}
    print("RESULT" + json.dumps(out))
    """
)


def test_every_loss_trains_one_step_under_mirrored_strategy(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    results = json.loads(line[len("RESULT"):])
    from sst_tf.config import LOSSES

    assert set(results) == set(LOSSES)
    for loss, r in results.items():
        assert r["replicas"] == 2
        assert r["loss"] == r["loss"] and r["loss"] >= 0.0, (loss, r)  # finite, not NaN
        assert all(r["changed"]), (loss, r)  # head (and proxies) updated
    assert results["proxy_anchor"]["proxies"] == [[10, 16]]
    assert results["sst"]["proxies"] == []


@pytest.mark.slow
def test_compare_script_writes_table_plot_and_curves(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "scripts/compare.py", "--flagfile=configs/digits.cfg",
           f"--out_dir={tmp_path}", "--losses=multi_similarity,proxy_anchor",
           "--samplers=class_balanced", "--samples_per_class=20", "--epochs=2",
           "--compare_eval_every=2",
           "--image_size=16", "--resize_size=16", "--target_recall=0.5"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "compare.md").read_text()
    rows = [x for x in table.splitlines() if x.startswith("| multi") or x.startswith("| proxy")]
    assert len(rows) == 2 and "failed" not in table
    assert (tmp_path / "compare.png").stat().st_size > 1000
    results = json.loads((tmp_path / "compare.json").read_text())
    for r in results:
        assert [p["epoch"] for p in r["curve"]] == [0, 2]
        times = [p["train_seconds"] for p in r["curve"]]
        assert times[0] == 0.0 < times[1] == r["train_seconds"]
        assert (tmp_path / f"{r['loss']}-class_balanced" / "metrics.json").exists()
    # --from_json merges earlier runs without training.
    merged = tmp_path / "merged"
    src = tmp_path / "compare.json"
    cmd = [sys.executable, "scripts/compare.py", "--flagfile=configs/digits.cfg",
           f"--out_dir={merged}", f"--from_json={src},{src}", "--samples_per_class=20"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [x for x in (merged / "compare.md").read_text().splitlines() if x.startswith("| ")]
    losses = [r.split(" | ")[0] for r in rows[1:]]
    assert losses == ["| multi_similarity"] * 2 + ["| proxy_anchor"] * 2


def test_compare_helpers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare", os.path.join(ROOT, "scripts",
                                                                         "compare.py"))
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    curve = [{"train_seconds": 0.0, "recall@1": 0.3}, {"train_seconds": 2.0, "recall@1": 0.6},
             {"train_seconds": 4.0, "recall@1": 0.9}]
    assert compare.time_to_reach(curve, 0.5) == 2.0
    assert compare.time_to_reach(curve, 0.95) is None
    metrics = {"recall@1": 0.9, "recall@2": 0.95, "map@r": 0.5, "nmi": 0.7}
    table = compare.markdown_table(
        [{"loss": "sst", "sampler": "local", "after": metrics, "curve": curve,
          "train_seconds": 4.0},
         {"loss": "npairs", "sampler": "random", "error": "ValueError: x"}], (1, 2), 0.5)
    lines = table.splitlines()
    assert lines[0].startswith("| loss | sampler | R@1 | R@2 | MAP@R | NMI |")
    assert lines[2] == "| sst | local | 0.9000 | 0.9500 | 0.5000 | 0.7000 | 4.0 | 2.0 |"
    assert "failed: ValueError: x" in lines[3]


def test_proxy_anchor_proxies_are_trained_checkpointed_and_restored(tmp_path):
    import numpy as np
    from _tiny_data import tiny_digits

    from sst_tf.config import TrainConfig
    from sst_tf.trainer import Trainer

    tiny = tiny_digits()
    cfg = TrainConfig(model_dir=str(tmp_path), backbone="small_cnn", pretrained=False,
                      embedding_dim=8, image_size=16, resize_size=16, random_flip=False,
                      loss="proxy_anchor", sampler="class_balanced", samples_per_class=5,
                      batch_size=50, epochs=1, lr=1e-3, progress=False)
    first = Trainer(cfg, dataset=tiny)
    p0 = first.loss_layer.proxies.numpy().copy()
    metrics = first.fit()
    assert metrics["train"]["epochs_run"] == 1
    trained = first.loss_layer.proxies.numpy()
    assert trained.shape == (10, 8) and not np.array_equal(p0, trained)
    again = Trainer(cfg, dataset=tiny)  # a fresh init, then fit() restores the checkpoint
    assert not np.array_equal(again.loss_layer.proxies.numpy(), trained)
    again.fit()
    np.testing.assert_array_equal(again.loss_layer.proxies.numpy(), trained)
    assert int(again.loss_optimizer.iterations.numpy()) == int(
        first.loss_optimizer.iterations.numpy()) > 0
