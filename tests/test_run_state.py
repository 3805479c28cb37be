import dataclasses
import json
import os

import pytest

from sst_tf import export
from sst_tf.run_state import RunFolder, interrupted_dir, run_record
from sst_tf.trainer import TrainConfig, Trainer


def test_a_run_writes_where_the_layout_says_and_export_reads_it_there(tmp_path, tiny):
    config = TrainConfig(model_dir=str(tmp_path), backbone="small_cnn", pretrained=False,
                         embedding_dim=8, image_size=16, resize_size=16, random_flip=False,
                         batch_size=50, num_targets=3, epochs=1, lr=1e-3, sampler="random",
                         progress=False)
    Trainer(config, dataset=tiny).fit()
    folder = RunFolder(str(tmp_path))
    with open(folder.config) as f:
        assert json.load(f)["batch_size"] == 50
    with open(folder.metrics) as f:
        assert set(json.load(f)) >= {"before", "after"}
    assert any(n.startswith("ckpt-1") for n in os.listdir(folder.checkpoints))
    assert os.listdir(folder.train_events) and os.listdir(folder.eval_events)
    assert os.path.isfile(os.path.join(folder.export, "saved_model.pb"))
    assert os.path.isfile(os.path.join(folder.projector, "projector_config.pbtxt"))
    # The export command finds the run's config and checkpoint through the same layout.
    assert export.load_run_config(str(tmp_path)).embedding_dim == 8
    assert export.find_checkpoint(str(tmp_path), None).startswith(folder.checkpoints)
    assert interrupted_dir(folder.checkpoints) == os.path.join(folder.checkpoints, "interrupted")


def test_run_record_is_the_flags_and_the_split_sizes(tiny):
    record = run_record(TrainConfig(model_dir="runs/x", batch_size=64), tiny)
    assert set(record) == {f.name for f in dataclasses.fields(TrainConfig)} | {
        "num_train_images", "num_test_images", "data_fingerprint"}
    assert record["batch_size"] == 64 and record["model_dir"] == "runs/x"
    assert (record["num_train_images"], record["num_test_images"]) == (len(tiny.train),
                                                                     len(tiny.test))


def test_resuming_on_other_data_of_the_same_size_is_refused(tiny):
    from sst_tf.datasets.splits import Dataset, Split
    from sst_tf.run_state import IncompatibleRunError, check_resume_config

    config = TrainConfig(model_dir="runs/x")
    saved = run_record(config, tiny)
    # The same images moved elsewhere: the same record.
    assert run_record(config, Dataset(tiny.name, tiny.train, tiny.test)) == saved
    # Other classes, the same image counts: refused, naming the data.
    relabelled = Split(labels=(tiny.train.labels + 1) % tiny.train.num_classes,
                       class_names=tiny.train.class_names, images=tiny.train.images)
    other = run_record(config, Dataset(tiny.name, relabelled, tiny.test))
    assert other["num_train_images"] == saved["num_train_images"]
    with pytest.raises(IncompatibleRunError, match="data_fingerprint.*other classes or images"):
        check_resume_config(saved, other, allow_changes=True)


def test_a_run_saved_before_the_head_batchnorm_flag_had_none(tmp_path):
    """A config.json without `embedding_batchnorm` is a model without the layer: an
    export rebuilds it so, and a resume that would add the layer is refused by name."""
    from sst_tf.run_state import IncompatibleRunError, check_resume_config

    cfg = TrainConfig(model_dir=str(tmp_path), loss="arcface", backbone="small_cnn",
                      pretrained=False, image_size=16).resolved()
    saved = dataclasses.asdict(cfg)
    del saved["embedding_batchnorm"]
    with open(tmp_path / "config.json", "w") as f:
        json.dump(saved, f)
    assert export.load_run_config(str(tmp_path)).embedding_batchnorm is False
    current = dataclasses.asdict(cfg)  # arcface's default now: the layer
    with pytest.raises(IncompatibleRunError, match="--embedding_batchnorm: False in the saved"):
        check_resume_config(saved, current)
    check_resume_config(saved, {**current, "embedding_batchnorm": False})
