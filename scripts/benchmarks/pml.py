"""Benchmark section `pml`: every loss shared with pytorch-metric-learning, side by side.

Forward and backward of one loss on the same batch (`pml_side.batch_inputs`:
B x 512 standard-normal embeddings, B / 4 classes of 4 images), one thread
each, every (library, loss, batch) in a fresh process that reports its median
time and the growth of its peak RSS over the process before the first call.
PML runs in a side environment (`--pml_python`, torch + pytorch-metric-learning
2.9): it is an oracle, never a dependency.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SCRIPT, _reset_peak, _rss_mib

PML_SIDE = Path(__file__).resolve().parent / "pml_side.py"
# The project's losses that pytorch-metric-learning also has (PML's classes in pml_side.py).
SHARED = ("contrastive", "multi_similarity", "triplet_semihard", "triplet_hard", "lifted_struct",
          "npairs", "proxy_anchor", "circle", "supcon", "ntxent", "arcface", "cosface",
          "subcenter_arcface")
# The table's rows: (row name, the project's loss[:PARAM=VALUE], PML's loss, the same
# computation as PML's). N-pairs' default makes every row of the batch an anchor
# (B x B logits); PML's NPairsLoss keeps one pair per class (N x N, N the classes),
# the project's `pairs=per_class`.
ROWS = tuple(row for name in SHARED for row in (
    [(f"`{name}`", name, name, name != "npairs")]
    + ([("`npairs`, `pairs=per_class`", "npairs:pairs=per_class", "npairs", True)]
       if name == "npairs" else [])))



def pml_kwargs(name: str) -> dict:
    """PML's keyword arguments for a shared loss, from this project's registry defaults.

    Args:
      name: a name of `SHARED`.

    Returns:
      {"loss": {...}, "miner": {...}}: the arguments of PML's loss and miner
      classes (`pml_side.CLASSES`) that carry the registry's margin, scale,
      temperature or weights; the time of a loss does not depend on these
      values, but the two sides compute with the same ones.
    """
    from sst_tf import loss_registry

    margin = loss_registry.spec(name).margin
    p = loss_registry.loss_params(name)
    loss, miner = {
        "contrastive": lambda: ({"neg_margin": margin}, {}),
        "multi_similarity": lambda: ({k: p[k] for k in ("alpha", "beta", "base")},
                                     {"epsilon": p["epsilon"]}),
        "triplet_semihard": lambda: ({"margin": margin},
                                     {"margin": margin, "type_of_triplets": "semihard"}),
        "triplet_hard": lambda: ({"margin": margin}, {}),
        "lifted_struct": lambda: ({"neg_margin": margin}, {}),
        "npairs": lambda: ({}, {}),  # PML's NPairsLoss has no parameter (its dot products)
        "proxy_anchor": lambda: ({"margin": p["delta"], "alpha": p["alpha"]}, {}),
        "circle": lambda: ({"m": p["m"], "gamma": p["gamma"]}, {}),
        "supcon": lambda: ({"temperature": p["temperature"]}, {}),
        "ntxent": lambda: ({"temperature": p["temperature"]}, {}),
        "arcface": lambda: ({"margin": margin, "scale": p["scale"]}, {}),
        "cosface": lambda: ({"margin": margin, "scale": p["scale"]}, {}),
        "subcenter_arcface": lambda: ({"margin": margin, "scale": p["scale"],
                                       "sub_centers": int(p["sub_centers"])}, {}),
    }[name]()
    return {"loss": loss, "miner": miner}


# Each child may use this much address space and time; beyond, it is reported as failed.
CHILD_MEMORY_GIB, CHILD_SECONDS = 8, 600


def _limit_memory() -> None:
    limit = CHILD_MEMORY_GIB * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _run(cmd: list[str]) -> dict:
    """A child's JSON line; {"failed": reason} when it did not finish (memory, time)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                             preexec_fn=_limit_memory, timeout=CHILD_SECONDS)
    except subprocess.TimeoutExpired:
        print(f"[benchmark] {' '.join(cmd[2:6])}: over {CHILD_SECONDS} s", flush=True)
        return {"failed": f"over {CHILD_SECONDS} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or [""])[-1][:120]
        reason = (f"out of memory (> {CHILD_MEMORY_GIB} GiB)"
                  if "memory" in out.stderr.lower() or out.returncode in (-9, 137)
                  else f"exit {out.returncode}: {last}")
        print(f"[benchmark] {' '.join(cmd[2:6])}: {reason}", flush=True)
        return {"failed": reason}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ms(r: dict) -> str:
    return "failed" if "failed" in r else f"{r['ms']:.1f}"


def _mib(r: dict) -> str:
    return "failed" if "failed" in r else f"{r['peak_mib']:.0f}"


def _ratio(here: dict, peer: dict) -> str:
    if "failed" in here or "failed" in peer:
        return "-"
    return f"{here['ms'] / peer['ms']:.2f}"


def bench_pml(args) -> str:
    """Milliseconds and peak memory of each shared loss here and in PML, B = 200 and 1,024."""
    if not args.pml_python or not Path(args.pml_python).is_file():
        raise RuntimeError(f"--pml_python={args.pml_python!r} is not a python: give the side "
                           "environment's (its making: scripts/make_pml_fixtures.py)")
    batches, dim, repeats = (200, 1024), 512, args.pml_repeats
    rows, version = [], "?"
    for row, name, peer_name, same in ROWS:
        cells = []
        for b in batches:
            here = _run([sys.executable, str(SCRIPT), "--_loss_child",
                         f"{name},{b},{dim},{repeats}"])
            peer = _run([args.pml_python, str(PML_SIDE), peer_name, str(b), str(dim),
                         str(repeats), json.dumps(pml_kwargs(peer_name))])
            version = peer.get("version", version)
            cells.append((here, peer))
        rows.append((row, same, cells))
    lines = [
        f"Forward + backward of one loss (the gradient w.r.t. the embeddings and the loss's own "
        f"weights), B x {dim} float32, B / 4 classes of 4, one thread per library "
        f"(TensorFlow intra/inter-op 1, `torch.set_num_threads(1)`), median of {repeats} "
        f"runs after a warm-up, pytorch-metric-learning {version} on torch CPU. Here: "
        "`sst_tf.losses.make_loss(NAME)` in a `tf.function`, registry defaults; PML: its "
        "class with the registry's margins, scales and temperatures (`pml_kwargs`; with its "
        "miner for Multi-Similarity, `TripletMarginMiner('semihard')` and `BatchHardMiner` "
        "for the triplet losses, whose mining rules differ in detail). Memory: peak RSS "
        "growth of the process over its state before the first call (MiB). A child that "
        f"needs more than {CHILD_MEMORY_GIB} GiB of address space or {CHILD_SECONDS} s is "
        "reported as failed.",
        "",
        "| loss | B=200 here ms | PML ms | ratio | B=1024 here ms | PML ms | ratio | "
        "B=1024 here MiB | PML MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, same, ((h2, p2), (h1, p1)) in rows:
        lines.append(
            f"| {row}{'' if same else ' (*)'} | {_ms(h2)} | {_ms(p2)} | {_ratio(h2, p2)} | "
            f"{_ms(h1)} | {_ms(p1)} | {_ratio(h1, p1)} | {_mib(h1)} | {_mib(p1)} |")

    def slower_than_pml(want_same: bool) -> list[str]:
        return [f"{n} at B={b}" for n, same, cells in rows if same == want_same
                for b, (h, p) in zip(batches, cells, strict=True)
                if "failed" in h or ("failed" not in p and h["ms"] > p["ms"])]

    slower, other = slower_than_pml(True), slower_than_pml(False)
    failed = [f"{n} at B={b}" for n, _, cells in rows
              for b, (h, p) in zip(batches, cells, strict=True) if "failed" in p]
    lines += ["", "Ratio: time here / PML's (below 1: faster here). "
              + (f"Slower than PML (or failed here): {', '.join(slower)}." if slower else
                 "No loss is slower than PML's on the same computation at either batch size.")
              + (f" PML did not finish: {', '.join(failed)}." if failed else ""),
              "", "(*) Not PML's computation: N-pairs' default makes every row of the batch "
              "an anchor, with the other rows of its class as positives (B x B logits); PML's "
              "`NPairsLoss` keeps the first pair of each class (N x N logits, N = B / 4 "
              "here), which is `--npairs_pairs=per_class` (the next row, equal to PML's "
              "values in tests/test_losses_pml.py)."
              + (f" Slower than PML's smaller problem: {', '.join(other)}." if other else "")]
    # The semi-hard triplet's memory against the batch: B^2 growth (tensorflow-addons' B^3).
    growth = []
    for b in (256, 512, 1024, 2048):
        growth.append((b, _run([sys.executable, str(SCRIPT), "--_loss_child",
                                f"triplet_semihard,{b},{dim},3"])))
    lines += ["", "### The semi-hard triplet's memory against the batch", "",
              "| B | ms | peak RSS growth MiB | B x B float32 MiB |", "|---|---|---|---|"]
    for b, r in growth:
        lines.append(f"| {b} | {_ms(r)} | {_mib(r)} | {b * b * 4 / 2**20:.0f} |")
    (b0, r0), (b1, r1) = growth[1], growth[-1]
    exponent = np.log(max(r1["peak_mib"], 1e-3) / max(r0["peak_mib"], 1e-3)) / np.log(b1 / b0)
    lines += ["", f"From B={b0} to B={b1} the peak grows as B^{exponent:.1f} (one sort per "
              "anchor and a binary search per positive pair; tensorflow-addons' form built a "
              "[B, B, B] tensor: 32 GiB at B=2048).", ""]
    return "\n".join(lines)


def _loss_child(spec: str) -> dict:
    """The project's side, in its own process: `NAME[:KEY=VALUE],B,DIM,REPEATS` -> {ms, ...}.

    Returns {"ms": median, "runs": repeats, "peak_mib": peak RSS growth}; KEY=VALUE
    replaces one of the loss's registry parameters (e.g. `npairs:pairs=per_class`).
    """
    import tensorflow as tf

    try:  # a fresh process (the section's); in one already running TensorFlow, as it is
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    from benchmarks.pml_side import batch_inputs
    from sst_tf import loss_registry, losses

    name, b, dim, repeats = spec.split(",")
    name, _, option = name.partition(":")  # NAME:key=value: a parameter of the registry's
    params = dict([option.split("=", 1)]) if option else None
    b, dim, repeats = int(b), int(dim), int(repeats)
    x_np, labels_np = batch_inputs(b, dim)
    classes = np.unique(labels_np)
    layer = None
    if name == "proxy_anchor":
        layer = losses.ProxyAnchor(class_ids=classes, embedding_dim=dim, seed=0)
    elif name in loss_registry.MARGIN_LOSSES:
        layer = losses.MarginSoftmax(name, class_ids=classes, embedding_dim=dim, seed=0)
    fn = losses.make_loss(name, loss_layer=layer, params=params)
    x = tf.Variable(x_np)
    labels = tf.constant(labels_np.astype(np.int32))
    targets = tf.fill([b, 1], -1)
    mask = tf.ones([b], tf.bool)
    variables = [x] + (list(layer.trainable_variables) if layer is not None else [])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = fn(x, labels, targets, mask)
        return loss, tape.gradient(loss, variables)

    _reset_peak()
    base = _rss_mib("VmHWM")
    step()  # trace
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss, grads = step()
        _ = loss.numpy(), [g.numpy() for g in grads]
        times.append(time.perf_counter() - t0)
    return {"ms": 1e3 * statistics.median(times), "runs": repeats,
            "peak_mib": _rss_mib("VmHWM") - base}
