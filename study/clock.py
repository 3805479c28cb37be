"""Training clocks for equal-time budgets: wall time, CPU time, and reference seconds.

A CPU second is not a fixed amount of work: the same epoch of the same run
took twice the CPU time on this project's build machine in one session as in
another, at the same load (study/docs/sst_study.md section 14). The "reference"
clock divides a run's CPU time by the speed of the machine at that moment,
measured by a fixed workload (a small convolution forward and backward pass,
`reference_op_seconds`), so that budgets given in reference seconds buy the
same work on a slower or busier machine:

    reference seconds = CPU seconds x REFERENCE_OP_SECONDS / measured op seconds

`REFERENCE_OP_SECONDS` is the op's CPU time on the machine that defined the
unit; on a machine twice as slow a CPU second counts as half a reference
second.

Measured limit: the probe does not follow the training's speed across
sessions. In the session after the unit was fixed the probe ran 2.7 x faster
(11.5-12.5 ms) while the suite's training epochs ran 1.7-2.1 x faster, so
60 reference seconds bought 4-5 epochs where the unit's session trained 6
(study/docs/sst_study.md section 15). `study/compare.py` therefore counts CPU
seconds by default and takes a table's runs from one session; the probes are
still recorded, and compare.md warns when merged runs' probes disagree.
"""

from __future__ import annotations

import statistics
import time

import tensorflow as tf

# CPU seconds of one `reference_op_seconds` call on the machine that defined the
# unit: the median of 30 probes (25-34 ms) on this project's 2-core build
# machine, one TensorFlow thread, during the runs of study/docs/sst_study.md section 14
# (2026-12-03), so those CPU-clock runs count about one reference second per
# CPU second. Fixed: changing it changes the unit of every stored budget.
REFERENCE_OP_SECONDS = 0.032

CLOCKS = ("wall", "cpu", "reference")

_OP = None


def _reference_op():
    """The fixed workload: two 3x3 convolutions on 32 images of 32x32, with gradients."""
    global _OP
    if _OP is None:
        with tf.device("/CPU:0"):  # the CPU's speed, also on a machine with a GPU
            rng = tf.random.Generator.from_seed(0)
            x = rng.normal((32, 32, 32, 16))
            w1 = tf.Variable(rng.normal((3, 3, 16, 32)) * 0.1)
            w2 = tf.Variable(rng.normal((3, 3, 32, 32)) * 0.1)

        @tf.function
        def op():
            with tf.device("/CPU:0"), tf.GradientTape() as tape:
                h = tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME"))
                y = tf.nn.conv2d(h, w2, 1, "SAME")
                loss = tf.reduce_mean(tf.square(y))
            return tape.gradient(loss, [w1, w2])

        op()  # trace outside the timing
        _OP = op
    return _OP


def reference_op_seconds(repeats: int = 5) -> float:
    """The CPU time of the fixed workload on this machine now (median of `repeats`).

    Args:
      repeats: timed calls (each after the one-off trace).

    Returns:
      CPU seconds of one call.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    op = _reference_op()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        grads = op()
        _ = [g.numpy() for g in grads]  # wait for the result
        times.append(time.process_time() - start)
    return statistics.median(times)


class TrainingClock:
    """Counts training time in one clock's unit, one timed span at a time.

    Args:
      kind: "wall" (elapsed seconds), "cpu" (the process's CPU seconds) or
        "reference" (CPU seconds scaled by the machine's measured speed; the
        speed is measured at the start of every span).
      measure: the speed probe of the "reference" clock (returns seconds of
        the reference op); tests pass their own.
    """

    def __init__(self, kind: str, measure=reference_op_seconds):
        if kind not in CLOCKS:
            raise ValueError(f"--budget_clock must be one of {', '.join(CLOCKS)}, got {kind!r}")
        self.kind = kind
        self._measure = measure
        self.op_seconds: list[float] = []  # the speed probes of the reference clock
        self._start = self._cpu_start = None

    def start(self) -> None:
        """Starts a span (the reference clock first measures the machine's speed)."""
        if self.kind == "reference":
            self.op_seconds.append(float(self._measure()))
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        """Ends the span.

        Returns:
          (seconds in this clock's unit, elapsed wall seconds).
        """
        if self._start is None:
            raise RuntimeError("TrainingClock.stop() without start()")
        wall = time.perf_counter() - self._start
        cpu = time.process_time() - self._cpu_start
        self._start = None
        if self.kind == "wall":
            return wall, wall
        if self.kind == "cpu":
            return cpu, wall
        return cpu * REFERENCE_OP_SECONDS / self.op_seconds[-1], wall
