r"""Losses side by side: training dynamics, MAP@R over training time, seeds.

  python study/loss_study.py --flagfile=configs/digits.cfg --out_dir=runs/loss_study \
      --seeds=0,1,2 --curve_every=2 \
      --variant=sst:loss=sst --variant=triplet:loss=triplet \
      --variant=contrastive:loss=contrastive \
      --variant=sst_s16:loss=sst,normalize=true,sst_scale=16

Every `sst_tf.train` flag sets the shared configuration; each `--variant` is
`NAME:field=value,...` (fields of `TrainConfig`, e.g. `loss`, `normalize`,
`sst_scale`, `sst_imposters`, `num_targets`, `sampler`). Every cell
(variant x seed) trains in this process with the same backbone, embedding size
and number of epochs (the plateau schedule applies, early stopping does not).

Every `--curve_every` epochs (and after the last) a cell records:
  * `map@r` of the test split and the training seconds so far
    (sampling, refresh and steps; the diagnostics themselves are not counted);
  * the epoch's mean training loss;
  * on `--probe_batches` batches of the epoch's plan (no augmentation):
    the loss, the global norm of its gradient over the model's variables, the
    mean norm of its gradient per embedding row, the mean norm of the head's
    output before any L2 normalisation (`head_norm`) and of the embeddings,
    the share of backbone feature channels that are zero for every probe image
    (`dead_features`: dead ReLUs), and the share of the loss's terms whose
    gradient is not negligible (`active`, see `active_share`).

Writes `study.json` (per cell: final test metrics, curve) and `study.md`
(final MAP@R, R-Precision, Recall@1, NMI as mean ± std over seeds, and the
diagnostics at the end) to --out_dir; `--plot=FILE.png` draws MAP@R against
training seconds (one line per variant, mean over seeds). `--render=a.json,...`
re-renders the table (and plot) of earlier runs.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sst_tf import config_flags, evaluation, losses, pipeline, sampling  # noqa: E402
from sst_tf import train as train_cli  # noqa: E402  (defines the shared training flags)
from sst_tf.neighbors import pairwise_squared_distances  # noqa: E402

flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each variant is run once per seed.")
flags.DEFINE_multi_string("variant", None, "NAME:field=value,... (TrainConfig overrides).")
flags.DEFINE_string("out_dir", None, "Output folder.")
flags.DEFINE_integer("curve_every", 1, "Record test MAP@R and diagnostics every N epochs.")
flags.DEFINE_integer("probe_batches", 2, "Plan batches the diagnostics are computed on.")
flags.DEFINE_float("active_threshold", 0.01,
                   "A term is active when its derivative w.r.t. its margin variable "
                   "exceeds this (SST: sigmoid(s*z)*s; hinge losses: 1 inside the margin).")
flags.DEFINE_list("render", [], "Only re-render the table from these study.json files.")
flags.DEFINE_string("plot", None, "Write MAP@R against training time to this PNG.")
flags.DEFINE_enum("plot_x", "seconds", ["seconds", "epoch"],
                  "x axis of --plot: training seconds, or epochs (an equal budget of steps "
                  "for every variant, whatever the machine's load).")

FLAGS = flags.FLAGS


def active_share(cfg, x: tf.Tensor, labels, targets, mask, threshold: float) -> float:
    """Share of the loss's terms whose derivative is above `threshold`.

    SST: triplets with sigmoid(s * z) * s > threshold, z = D_at - (D_ai + D_ti)/2
    (per-triplet weight of the mean form); triplet: triplets inside the margin;
    contrastive: same-class pairs at a distance > 1e-6 and other-class pairs
    inside the margin. NaN for other losses.
    """
    x = tf.cast(x, tf.float32)
    if cfg.loss in ("sst", "triplet"):
        d, d_at, d_ti, valid, count = losses.paper._triplet_terms(x, labels, targets, mask)
        if cfg.loss == "sst":
            s = cfg.sst_options()["scale"]
            z = d_at[:, :, None] - 0.5 * (d[:, None, :] + d_ti)
            act = tf.sigmoid(s * z) * s > threshold
        else:
            margin = 0.2 if cfg.margin is None else cfg.margin
            act = d_at[:, :, None] + margin - d[:, None, :] > 0
        n = tf.reduce_sum(tf.cast(act & valid, tf.float32))
        return float(n / tf.maximum(count, 1.0))
    if cfg.loss == "contrastive":
        margin = 0.5 if cfg.margin is None else cfg.margin
        d = pairwise_squared_distances(x)
        same = tf.equal(labels[:, None], labels[None, :])
        ok = mask[:, None] & mask[None, :] & ~tf.eye(tf.shape(x)[0], dtype=tf.bool)
        act = tf.where(same, d > 1e-6, d < margin) & ok
        return float(tf.reduce_sum(tf.cast(act, tf.float32))
                     / tf.maximum(tf.reduce_sum(tf.cast(ok, tf.float32)), 1.0))
    return math.nan


def probe(trainer, epoch: int, num_batches: int, threshold: float) -> dict:
    """Loss, gradient and embedding diagnostics on the first batches of a plan."""
    cfg = trainer.config
    plan = trainer.sampler.plan(epoch)
    n = min(num_batches, plan.num_batches)
    if n == 0:
        return {}
    targets = (plan.targets[:n] if plan.targets is not None
               else np.full(plan.indices[:n].shape + (cfg.num_targets,), -1, np.int32))
    sub = sampling.EpochPlan(plan.indices[:n], targets, plan.mask[:n], {})
    opts = dataclasses.replace(trainer.image_options, random_flip=False)
    ds = pipeline.train_dataset(trainer.dataset.train, sub, opts, seed=cfg.seed, epoch=epoch)
    model = trainer.model
    inner = keras.Model(model.inputs, [model.get_layer("pool").output,
                                       model.get_layer("head").output, model.output])
    variables = trainer.step.backbone_vars + trainer.step.head_vars
    rows = []
    for images, labels, tgt, mask in ds:
        with tf.GradientTape(persistent=True) as tape:
            pooled, head, emb = inner(images, training=False)
            tape.watch(emb)
            loss = trainer.step.loss_fn(emb, labels, tgt, mask)
        grads = tape.gradient(loss, variables)
        g_emb = tape.gradient(loss, emb)
        del tape
        m = mask.numpy()
        gn = float(tf.linalg.global_norm([g for g in grads if g is not None]))
        p = pooled.numpy()[m]
        rows.append({
            "probe_loss": float(loss),
            "grad_norm": gn,
            "decay_norm": cfg.weight_decay * float(tf.linalg.global_norm(variables)),
            "emb_grad_norm": float(np.linalg.norm(g_emb.numpy()[m], axis=1).mean())
            if g_emb is not None else math.nan,
            "head_norm": float(np.linalg.norm(head.numpy()[m], axis=1).mean()),
            "emb_norm": float(np.linalg.norm(emb.numpy()[m], axis=1).mean()),
            "dead_features": float((np.abs(p).max(axis=0) == 0).mean()),
            "active": active_share(cfg, emb, labels, tgt, mask, threshold),
        })
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def run_cell(base, name: str, overrides: dict, seed: int, out_dir: str) -> dict:
    """Trains one cell; returns its final metrics and curve."""
    from sst_tf.trainer import Trainer

    keras.backend.clear_session()
    gc.collect()
    cfg = dataclasses.replace(base, seed=seed, eval_every=0, progress=False, export=False,
                              early_stop_patience=10**6,
                              model_dir=os.path.join(out_dir, f"{name}-{seed}"), **overrides)
    trainer = Trainer(cfg)
    test = trainer.dataset.test
    before = trainer.evaluate()
    start = time.perf_counter()
    trainer.refresh_sampler(0)  # the first plan, to probe the untrained model on it
    seconds = time.perf_counter() - start
    curve = [{"epoch": 0, "seconds": 0.0, "map@r": before["map@r"]}]
    curve[0].update(probe(trainer, 0, FLAGS.probe_batches, FLAGS.active_threshold))
    logging.info("%s seed %d untrained: %s", name, seed,
                 ", ".join(f"{k} {v:.4g}" for k, v in curve[0].items()))
    for epoch in range(cfg.epochs):
        refresh = epoch > 0 and epoch % cfg.refresh_every == 0
        start = time.perf_counter()
        stats = trainer.train_epoch(epoch, refresh)
        seconds += time.perf_counter() - start
        trainer.end_epoch(epoch, stats["loss"])
        if (epoch + 1) % FLAGS.curve_every == 0 or epoch + 1 == cfg.epochs:
            point = {"epoch": epoch + 1, "seconds": seconds, "loss": float(stats["loss"]),
                     "sst_at_refresh": float(stats.get("sampler/sst_at_refresh", math.nan))}
            point.update(probe(trainer, epoch, FLAGS.probe_batches, FLAGS.active_threshold))
            emb = trainer.embed(test)
            point["map@r"] = float(evaluation.map_at_r(emb, test.labels))
            curve.append(point)
            logging.info("%s seed %d epoch %d: %s", name, seed, epoch + 1,
                         ", ".join(f"{k} {v:.4g}" for k, v in point.items()))
    after = trainer.evaluate()
    logging.info("%s seed %d: %.1fs, recall@1 %.4f, map@r %.4f", name, seed, seconds,
                 after["recall@1"], after["map@r"])
    return {"variant": name, "seed": seed, "overrides": overrides, "train_seconds": seconds,
            "before": before, "after": after, "curve": curve}


def _ms(values) -> str:
    v = np.asarray(values, np.float64)
    return f"{v.mean():.3f} ± {v.std():.3f}"


def markdown(results: list[dict]) -> str:
    """One row per variant: final metrics (mean ± std over seeds) and end diagnostics."""
    head = ["variant", "MAP@R", "R-Precision", "Recall@1", "NMI", "train s", "seeds",
            "loss (end)", "grad norm", "wd x |w|", "head norm", "active", "dead features"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in dict.fromkeys(r["variant"] for r in results):
        cell = [r for r in results if r["variant"] == name]

        def end(key, fmt=".3g", cell=cell):
            vals = [r["curve"][-1].get(key, math.nan) for r in cell]
            return format(float(np.nanmean(vals)), fmt) if not np.all(np.isnan(vals)) else "-"

        lines.append("| " + " | ".join([
            name,
            _ms([r["after"]["map@r"] for r in cell]),
            _ms([r["after"]["r_precision"] for r in cell]),
            _ms([r["after"]["recall@1"] for r in cell]),
            _ms([r["after"]["nmi"] for r in cell]),
            f"{np.mean([r['train_seconds'] for r in cell]):.0f}",
            str(len(cell)),
            end("loss"), end("grad_norm"), end("decay_norm"), end("head_norm"),
            end("active", ".3f"), end("dead_features", ".2f"),
        ]) + " |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: str, title: str = "", x: str = "seconds") -> None:
    """MAP@R of the test split against training time ("seconds" or "epoch"), mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["variant"] for r in results):
        cell = [r for r in results if r["variant"] == name]
        npts = min(len(r["curve"]) for r in cell)
        sec = np.mean([[p[x] for p in r["curve"][:npts]] for r in cell], axis=0)
        val = np.array([[p["map@r"] for p in r["curve"][:npts]] for r in cell])
        ax.plot(sec, val.mean(0), marker=".", label=name)
        if len(cell) > 1:
            ax.fill_between(sec, val.min(0), val.max(0), alpha=0.15)
    ax.set_xlabel("training seconds (mean over seeds)" if x == "seconds" else "epochs")
    ax.set_ylabel("MAP@R, test split")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        train_cli._fail(f"unexpected arguments {' '.join(argv[1:])!r}.")
    if FLAGS.render:
        results = []
        for path in FLAGS.render:
            with open(path) as f:
                results.extend(json.load(f)["results"])
        print(markdown(results))
        if FLAGS.plot:
            plot(results, FLAGS.plot, x=FLAGS.plot_x)
        return
    if not FLAGS.out_dir:
        train_cli._fail("--out_dir is required.")
    if not FLAGS.variant:
        train_cli._fail("at least one --variant is required.")
    if not FLAGS.model_dir:
        FLAGS.model_dir = FLAGS.out_dir
    try:
        base = train_cli.config_from_flags()
        variants = [config_flags.parse_overrides(v, type(base)) for v in FLAGS.variant]
        seeds = [int(s) for s in FLAGS.seeds]
        for _, overrides in variants:
            dataclasses.replace(base, **overrides).validate()
    except ValueError as e:
        train_cli._fail(str(e))
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    json_path = os.path.join(FLAGS.out_dir, "study.json")
    results = []
    for seed in seeds:
        for name, overrides in variants:
            results.append(run_cell(base, name, overrides, seed, FLAGS.out_dir))
            with open(json_path + ".tmp", "w") as f:
                json.dump({"results": results}, f, indent=1)
            os.replace(json_path + ".tmp", json_path)
    header = (f"Data set `{base.dataset}`, backbone `{base.backbone}`, embedding "
              f"{base.embedding_dim}, {base.epochs} epochs, batch {base.batch_size}, seeds "
              f"{','.join(map(str, seeds))}. Test split, mean ± std over "
              "seeds; diagnostics at the last epoch (mean over seeds).\n\n")
    table = markdown(results)
    with open(os.path.join(FLAGS.out_dir, "study.md"), "w") as f:
        f.write(header + table)
    print(header + table)
    if FLAGS.plot:
        plot(results, FLAGS.plot, f"{base.dataset}: MAP@R over training time", x=FLAGS.plot_x)


if __name__ == "__main__":
    app.run(main)
