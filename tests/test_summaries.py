"""sst_tf.summaries: TensorBoard events of a run and the plan's log lines."""

import os

import numpy as np
import pytest
import tensorflow as tf

from sst_tf import sampling, summaries
from sst_tf.run_state import RunFolder


def _scalars(folder):
    """{tag: [(step, value), ...]} of the event files in `folder`."""
    out = {}
    for name in sorted(os.listdir(folder)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
            for value in event.summary.value:
                out.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor))))
    return out


def test_the_chief_writes_epochs_and_evaluations_on_first_use(tmp_path):
    folder = RunFolder(str(tmp_path))
    s = summaries.Summaries(folder, is_chief=True)
    assert not os.path.exists(folder.train_events)  # nothing before the first write
    s.write_step(0.75, 3)
    s.write_epoch({"loss": 0.5}, (1e-3, 2e-3), 1)
    s.write_eval({"recall@1": 0.75, "num_queries": 10}, 1)
    train, evaluation = _scalars(folder.train_events), _scalars(folder.eval_events)
    assert train == {"loss_per_step": [(3, 0.75)], "loss": [(1, 0.5)],
                     "learning_rate": [(1, pytest.approx(1e-3))],
                     "head_learning_rate": [(1, pytest.approx(2e-3))]}
    assert evaluation == {"recall@1": [(1, 0.75)]}  # floats only


def test_other_workers_write_nothing(tmp_path):
    s = summaries.Summaries(RunFolder(str(tmp_path)), is_chief=False)
    s.write_step(0.75, 3)
    s.write_epoch({"loss": 0.5}, (1e-3, 2e-3), 1)
    s.write_eval({"recall@1": 0.75}, 1)
    assert os.listdir(tmp_path) == []


def test_log_plan_describes_the_batches(caplog):
    labels = np.repeat(np.arange(4), 5)
    sampler = sampling.RandomSampler(labels, 10, num_targets=2, seed=0)
    sampler.refresh(np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32), 0)
    plan = sampler.plan(0)
    # The absl logger's own level too: an earlier test may have lowered its verbosity.
    with caplog.at_level("INFO", logger="absl"):
        summaries.log_plan(1, True, plan, 0.25)
    first, second = [r.getMessage() for r in caplog.records][-2:]
    assert first.startswith(f"Epoch 2 refresh: 0.25s, {plan.num_batches} batches, coverage ")
    assert second.startswith("Epoch 2 batches: ") and "D_at/D_ai" in second
    assert "SST" not in second  # no loss-specific number whatever the loss
