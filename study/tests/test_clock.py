"""study/clock.py: the wall, CPU and reference clocks of equal-time budgets."""

import time

import clock
import pytest


def _busy(seconds: float) -> None:
    """Spends about `seconds` of this process's CPU time."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_reference_clock_divides_cpu_time_by_the_measured_speed():
    probes = iter([clock.REFERENCE_OP_SECONDS * 2, clock.REFERENCE_OP_SECONDS / 4])
    timer = clock.TrainingClock("reference", measure=lambda: next(probes))
    # A machine twice as slow as the unit's: a CPU second counts half.
    timer.start()
    cpu = time.process_time()
    _busy(0.2)
    cpu = time.process_time() - cpu
    seconds, wall = timer.stop()
    assert seconds == pytest.approx(cpu / 2, rel=0.05)
    assert wall >= seconds
    # Four times as fast: a CPU second counts four; the probe runs at every start.
    timer.start()
    cpu = time.process_time()
    _busy(0.1)
    cpu = time.process_time() - cpu
    seconds, _ = timer.stop()
    assert seconds == pytest.approx(cpu * 4, rel=0.05)
    assert timer.op_seconds == [clock.REFERENCE_OP_SECONDS * 2, clock.REFERENCE_OP_SECONDS / 4]


def test_the_cpu_clock_ignores_waiting_and_the_wall_clock_counts_it():
    cpu_timer, wall_timer = clock.TrainingClock("cpu"), clock.TrainingClock("wall")
    cpu_timer.start()
    wall_timer.start()
    time.sleep(0.3)
    cpu_seconds, cpu_wall = cpu_timer.stop()
    wall_seconds, wall_wall = wall_timer.stop()
    assert cpu_seconds < 0.1 and cpu_wall >= 0.3
    assert wall_seconds == wall_wall >= 0.3
    assert cpu_timer.op_seconds == [] == wall_timer.op_seconds  # no probe on these clocks


def test_the_reference_op_measures_this_machine():
    seconds = clock.reference_op_seconds(repeats=3)
    assert 0 < seconds < 10
    start = time.process_time()
    clock.reference_op_seconds(repeats=3)  # three calls cost about three op times
    assert time.process_time() - start >= 2 * seconds * 0.5


def test_bad_clock_arguments_name_the_flag_or_the_call():
    with pytest.raises(ValueError, match="--budget_clock must be one of wall, cpu, reference"):
        clock.TrainingClock("gpu")
    with pytest.raises(RuntimeError, match="without start"):
        clock.TrainingClock("cpu").stop()
    with pytest.raises(ValueError, match="repeats"):
        clock.reference_op_seconds(repeats=0)
