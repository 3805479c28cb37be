import os

import keras
import pytest

from sst_tf import evaluation, fit, pipeline, sampling
from sst_tf import model as model_lib

OPTS = pipeline.ImageOptions(16, 16, random_flip=False)


def test_metric_names():
    got = fit.metric_names({"recall@1": 0.5, "map@r": 0.25, "r_precision": 0.3,
                            "num_queries": 10, "num_queries_skipped": 0})
    assert got == {"val_recall_at_1": 0.5, "val_map_at_r": 0.25, "val_r_precision": 0.3}


def test_retrieval_metrics_in_history_early_stopping_and_summaries(tiny, tmp_path):
    keras.utils.set_random_seed(0)
    model = model_lib.build_model("small_cnn", None, 8, image_size=16)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=fit.MetricLoss("contrastive"),
                  run_eagerly=True)
    sampler = sampling.make_sampler("random", tiny.train.labels, 20, seed=0,
                                    compute_targets=False)
    source = fit.SamplerDataset(tiny.train, sampler, OPTS, steps_per_epoch=2)
    log_dir = str(tmp_path / "retrieval")
    evaluator = fit.RetrievalEvaluation(tiny.test, OPTS, every=2, ks=(1, 4), with_nmi=True,
                                        log_dir=log_dir)
    stop = keras.callbacks.EarlyStopping(monitor="val_map_at_r", mode="max", patience=10)
    hist = model.fit(source.dataset(model), epochs=3, verbose=0, shuffle=False,
                     callbacks=[source.refresh_callback(), evaluator, stop])
    # Evaluated after epoch 2 (every=2) and epoch 3 (the last): both in History.
    assert sorted(evaluator.history) == [2, 3]
    keys = {"val_recall_at_1", "val_recall_at_4", "val_map_at_r", "val_r_precision", "val_nmi"}
    assert keys <= set(hist.history)
    assert len(hist.history["val_map_at_r"]) == 2
    # Independent: the metrics of the final model computed directly.
    emb = model.predict(pipeline.eval_dataset(tiny.test, OPTS).map(lambda x, y: x), verbose=0)
    want = evaluation.evaluate(emb, tiny.test.labels, (1, 4), seed=0)
    assert hist.history["val_recall_at_1"][-1] == pytest.approx(want["recall@1"])
    assert hist.history["val_map_at_r"][-1] == pytest.approx(want["map@r"])
    assert hist.history["val_nmi"][-1] == pytest.approx(want["nmi"])
    assert stop.best == pytest.approx(max(hist.history["val_map_at_r"]))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(log_dir))


def test_bad_arguments(tiny):
    with pytest.raises(ValueError, match="every"):
        fit.RetrievalEvaluation(tiny.test, OPTS, every=0)
