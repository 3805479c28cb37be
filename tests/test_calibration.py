"""sst_tf.calibration against brute force over every pair, and its refusals."""

import itertools

import numpy as np
import pytest

from sst_tf import calibration


def _set(n_per_class=6, classes=5, dim=3, spread=0.6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 2
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


def _brute(x, y):
    """(distance, same) of every pair, in float64."""
    pairs = list(itertools.combinations(range(len(y)), 2))
    d = np.array([np.linalg.norm(x[i] - x[j]) for i, j in pairs])
    same = np.array([y[i] == y[j] for i, j in pairs])
    return d, same


def _brute_rates(d, same, t):
    tp, fp = (same & (d <= t)).sum(), (~same & (d <= t)).sum()
    recall = tp / same.sum()
    precision = tp / (tp + fp) if tp + fp else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "fmr": fp / (~same).sum(), "fnmr": 1 - recall}


def test_thresholds_are_the_brute_force_optima_of_every_pair():
    x, y = _set()
    d, same = _brute(x, y)
    cal = calibration.calibrate(x, y, fmr_targets=(0.05, 0.01))
    f1 = {t: _brute_rates(d, same, t)["f1"] for t in np.unique(d)}
    assert cal.thresholds["best_f1"] in f1
    assert f1[cal.thresholds["best_f1"]] == pytest.approx(max(f1.values()))
    for target in (0.05, 0.01):
        name = calibration.threshold_name(target)
        ok = [t for t in np.unique(d) if _brute_rates(d, same, t)["fmr"] <= target]
        assert cal.thresholds[name] == pytest.approx(max(ok))
        want = _brute_rates(d, same, cal.thresholds[name])
        for key, value in want.items():
            assert cal.rates[name][key] == pytest.approx(value), (name, key)
        # rates_at measures the same threshold on the same set identically.
        got = calibration.rates_at(cal.thresholds[name], x, y)
        assert got == pytest.approx(cal.rates[name])
    assert cal.num_pairs == {"same": int(same.sum()), "different": int((~same).sum())}
    assert cal.curve["threshold"] == sorted(cal.curve["threshold"])


def test_a_weighted_draw_estimates_the_rates_of_every_pair():
    x, y = _set(n_per_class=30, classes=20, spread=1.5, seed=1)  # 177,000 pairs
    d, same = _brute(x, y)
    t = float(np.quantile(d[same], 0.8))
    exact = _brute_rates(d, same, t)
    drawn = calibration.rates_at(t, x, y, max_pairs=20_000, seed=3)
    for key in ("fmr", "fnmr", "precision", "f1"):
        assert drawn[key] == pytest.approx(exact[key], abs=0.03), key
    # Without the weights the draw (half same-class pairs) would inflate precision.
    assert exact["precision"] < 0.9


def test_separated_classes_calibrate_to_no_errors_and_an_unreachable_target_to_zero():
    x, y = _set(spread=0.01)
    cal = calibration.calibrate(x, y, fmr_targets=(1e-3,))
    assert cal.rates["best_f1"]["f1"] == 1.0 and cal.rates["fmr=0.001"]["fnmr"] == 0.0
    # Every different-class pair closer than every same-class pair: no threshold reaches FMR 0.
    x = np.array([[0.0], [10.0], [0.1], [10.1]])
    cal = calibration.calibrate(x, [0, 0, 1, 1], fmr_targets=(0.2,))
    assert cal.thresholds["fmr=0.2"] == 0.0 and cal.rates["fmr=0.2"]["fnmr"] == 1.0
    # Below every pair's distance nothing matches; beyond all of them everything does.
    assert cal.rates_at(0.0) == {"precision": 1.0, "recall": 0.0, "f1": 0.0, "fmr": 0.0,
                                 "fnmr": 1.0}
    assert cal.rates_at(100.0)["fmr"] == 1.0 and cal.rates_at(100.0)["fnmr"] == 0.0


@pytest.mark.parametrize("x,y,match", [
    (np.zeros((4, 2)), [0, 0, 0, 0], "1 class"),
    (np.zeros((3, 2)), [0, 1, 2], "one image"),
    (np.array([[0.0, np.nan], [1.0, 1.0]]), [0, 1], "non-finite"),
    (np.zeros((3,)), [0, 1, 1], "shapes"),
])
def test_sets_without_pairs_to_learn_from_are_refused(x, y, match):
    with pytest.raises(ValueError, match=match):
        calibration.calibrate(x, y)


def test_bad_targets_and_thresholds_are_refused():
    x, y = _set()
    with pytest.raises(ValueError, match="target FMR"):
        calibration.calibrate(x, y, fmr_targets=(0.0,))
    with pytest.raises(ValueError, match="distance >= 0"):
        calibration.rates_at(-1.0, x, y)


def test_a_threshold_is_a_distance_or_a_name_the_export_records():
    info = {"metadata": {"thresholds": {"best_f1": 0.8, "fmr=0.001": 0.6}}}
    assert calibration.resolve_threshold(None, info, "E") is None
    assert calibration.resolve_threshold("0.5", info, "E") == 0.5
    assert calibration.resolve_threshold("fmr=0.001", info, "E") == 0.6
    with pytest.raises(ValueError, match="records no threshold of that name; it records: "
                                         "best_f1, fmr=0.001"):
        calibration.resolve_threshold("fmr=0.01", info, "E")
    with pytest.raises(ValueError, match="it records: none"):
        calibration.resolve_threshold("best_f1", {"metadata": {}}, "E")
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(ValueError, match="finite number >= 0"):
            calibration.resolve_threshold(bad, info, "E")
