"""Distance thresholds for same / different decisions, calibrated on labelled embeddings.

Two images are called "the same" when the Euclidean distance of their
embeddings is at most a threshold t (the distance `sst_tf.search` reports).
Over the pairs of a labelled set:

  FMR(t)   false-match rate: the share of different-class pairs within t;
  FNMR(t)  false-non-match rate: the share of same-class pairs beyond t;
  precision, recall (= 1 - FNMR) and F1 of the "same" decisions.

`calibrate` picks the threshold of the best F1 and, for each target FMR, the
largest threshold whose FMR stays at or below it; `rates_at` measures a
threshold on another labelled set (e.g. the test classes, with the threshold
from the training classes: the rates a user will get).

Large sets are not enumerated: up to `max_pairs` / 2 same-class pairs and as
many different-class pairs are drawn, each weighted by the inverse of its
sampling rate, so precision and F1 estimate those of all pairs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FMR_TARGETS = (1e-2, 1e-3)
MAX_PAIRS = 1_000_000
CURVE_POINTS = 200


def threshold_name(fmr: float) -> str:
    """The name of the threshold at a target FMR, e.g. "fmr=0.001"."""
    return f"fmr={fmr:g}"


@dataclasses.dataclass
class Calibration:
    """Thresholds calibrated on one labelled set.

    Attributes:
      thresholds: {"best_f1": t, "fmr=0.01": t, ...}: Euclidean distances.
      rates: per threshold name, {"precision", "recall", "f1", "fmr", "fnmr"}
        on the calibration set.
      curve: {"threshold", "fmr", "fnmr", "precision", "recall"}: lists of
        at most `CURVE_POINTS` points, by increasing threshold.
      num_pairs: {"same", "different"}: pairs in the set (not the drawn ones).
    """

    thresholds: dict[str, float]
    rates: dict[str, dict[str, float]]
    curve: dict[str, list[float]]
    num_pairs: dict[str, int]
    # Every distinct pair distance, increasing, with the (weighted) same- and
    # different-class pairs within it: the rates of any threshold (`rates_at`).
    _distances: np.ndarray = dataclasses.field(default=None, repr=False, compare=False)
    _same_within: np.ndarray = dataclasses.field(default=None, repr=False, compare=False)
    _different_within: np.ndarray = dataclasses.field(default=None, repr=False, compare=False)

    def rates_at(self, threshold: float) -> dict[str, float]:
        """Precision, recall, F1, FMR and FNMR of a threshold on this calibration's set."""
        if not (np.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"a threshold is a distance >= 0, got {threshold}")
        k = int(np.searchsorted(self._distances, threshold, side="right")) - 1
        tp = np.array([self._same_within[k] if k >= 0 else 0.0])
        fp = np.array([self._different_within[k] if k >= 0 else 0.0])
        r = _rates(tp, fp, float(self.num_pairs["same"]),
                   float(max(self.num_pairs["different"], 1)))
        return {key: float(v[0]) for key, v in r.items()}

    def to_json(self) -> dict:
        """A JSON-ready dict (thresholds, rates, pair counts; the curve left out)."""
        return {"thresholds": dict(self.thresholds), "rates": dict(self.rates),
                "num_pairs": dict(self.num_pairs)}


def _check(embeddings, labels) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(embeddings, np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"embeddings must be [N, d] and labels [N], got shapes {x.shape} and "
                         f"{y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings hold non-finite values")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"the calibration set holds {len(classes)} class(es): thresholds "
                         "need different-class pairs, from at least 2 classes")
    if counts.max() < 2:
        raise ValueError("every class of the calibration set holds one image: thresholds need "
                         "same-class pairs, from a class with at least 2 images")
    return x, y


def _same_pairs(y: np.ndarray, limit: int, rng) -> tuple[np.ndarray, np.ndarray, int]:
    """Same-class pairs (i < j): all of them, or `limit` drawn uniformly; and their count."""
    groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    sizes = np.array([len(g) * (len(g) - 1) // 2 for g in groups])
    total = int(sizes.sum())
    if total <= limit:
        pairs = [np.triu_indices(len(g), 1) for g in groups]
        i = np.concatenate([g[a] for g, (a, _) in zip(groups, pairs, strict=True)])
        j = np.concatenate([g[b] for g, (_, b) in zip(groups, pairs, strict=True)])
        return i, j, total
    which = rng.choice(len(groups), size=limit, p=sizes / total)  # a class per pair
    i, j = np.empty(limit, np.int64), np.empty(limit, np.int64)
    for c in np.unique(which):
        rows = np.flatnonzero(which == c)
        g = groups[c]
        a = rng.integers(0, len(g), len(rows))
        b = (a + rng.integers(1, len(g), len(rows))) % len(g)  # b != a
        i[rows], j[rows] = g[a], g[b]
    return i, j, total


def _different_pairs(y: np.ndarray, limit: int, total: int,
                     rng) -> tuple[np.ndarray, np.ndarray]:
    """Different-class pairs: all of them, or `limit` drawn uniformly (rejection)."""
    n = len(y)
    if total <= limit:
        a, b = np.triu_indices(n, 1)
        keep = y[a] != y[b]
        return a[keep], b[keep]
    i, j = np.empty(0, np.int64), np.empty(0, np.int64)
    while len(i) < limit:
        a = rng.integers(0, n, 2 * limit)
        b = rng.integers(0, n, 2 * limit)
        keep = y[a] != y[b]
        i, j = np.concatenate([i, a[keep]]), np.concatenate([j, b[keep]])
    return i[:limit], j[:limit]


def _distances(x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    out = np.empty(len(i))
    for start in range(0, len(i), 8192):  # [8192, d] float64 temporaries
        s = slice(start, start + 8192)
        out[s] = np.sqrt(((x[i[s]] - x[j[s]]) ** 2).sum(axis=1))
    return out


def pair_distances(embeddings, labels, max_pairs: int = MAX_PAIRS,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Euclidean distances of the pairs of a labelled set (all, or a weighted draw).

    Args:
      embeddings: [N, d].
      labels: [N] class labels (at least 2 classes, one with 2 images).
      max_pairs: pairs to compute at most (half same-class, half different).
      seed: seed of the draw.

    Returns:
      (distances [P], same [P] bool, weights [P]: pairs each stands for,
      {"same": count, "different": count} of all pairs of the set).

    Raises:
      ValueError: inputs of other shapes, non-finite values, one class, or no
        class with two images.
    """
    x, y = _check(embeddings, labels)
    rng = np.random.default_rng(seed)
    half = max(1, int(max_pairs) // 2)
    si, sj, total_same = _same_pairs(y, half, rng)
    total_diff = len(y) * (len(y) - 1) // 2 - total_same
    di, dj = _different_pairs(y, half, total_diff, rng)
    d = np.concatenate([_distances(x, si, sj), _distances(x, di, dj)])
    same = np.concatenate([np.ones(len(si), bool), np.zeros(len(di), bool)])
    w = np.concatenate([np.full(len(si), total_same / len(si)),
                        np.full(len(di), total_diff / max(len(di), 1))])
    return d, same, w, {"same": total_same, "different": total_diff}


def _rates(tp, fp, positives, negatives) -> dict[str, np.ndarray]:
    recall = tp / positives
    precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros_like(tp), where=(precision + recall) > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "fmr": fp / negatives,
            "fnmr": 1.0 - recall}


def calibrate(embeddings, labels, fmr_targets=FMR_TARGETS, max_pairs: int = MAX_PAIRS,
              seed: int = 0) -> Calibration:
    """The best-F1 threshold and the thresholds at target FMRs of a labelled set.

    Args:
      embeddings: [N, d] (the model's, as `sst_tf.search` compares them).
      labels: [N] class labels.
      fmr_targets: target false-match rates, each in (0, 1).
      max_pairs: pairs to compute at most (`pair_distances`).
      seed: seed of the pair draw.

    Returns:
      A `Calibration`. A target FMR below that of the closest pair gets
      threshold 0 (nothing matches but identical embeddings).

    Raises:
      ValueError: bad inputs (`pair_distances`) or a target outside (0, 1).
    """
    for fmr in fmr_targets:
        if not 0 < fmr < 1:
            raise ValueError(f"a target FMR must lie in (0, 1), got {fmr}")
    d, same, w, counts = pair_distances(embeddings, labels, max_pairs, seed)
    order = np.argsort(d, kind="stable")
    d, same, w = d[order], same[order], w[order]
    tp = np.cumsum(np.where(same, w, 0.0))
    fp = np.cumsum(np.where(same, 0.0, w))
    last = np.append(d[1:] != d[:-1], True)  # a threshold takes every pair at its distance
    t, tp, fp = d[last], tp[last], fp[last]
    positives, negatives = float(counts["same"]), float(max(counts["different"], 1))
    r = _rates(tp, fp, positives, negatives)
    picks = {"best_f1": int(np.argmax(r["f1"]))}
    thresholds = {"best_f1": float(t[picks["best_f1"]])}
    rates = {}
    for fmr in fmr_targets:
        ok = np.flatnonzero(r["fmr"] <= fmr)
        name = threshold_name(fmr)
        if len(ok):
            picks[name] = int(ok[-1])
            thresholds[name] = float(t[ok[-1]])
        else:
            thresholds[name] = 0.0
            rates[name] = {"precision": 1.0, "recall": 0.0, "f1": 0.0, "fmr": 0.0, "fnmr": 1.0}
    for name, k in picks.items():
        rates[name] = {key: float(v[k]) for key, v in r.items()}
    keep = np.unique(np.linspace(0, len(t) - 1, min(CURVE_POINTS, len(t))).astype(int))
    curve = {"threshold": t[keep].tolist(),
             **{key: r[key][keep].tolist() for key in ("fmr", "fnmr", "precision", "recall")}}
    return Calibration(thresholds, rates, curve, counts, t, tp, fp)


def rates_at(threshold: float, embeddings, labels, max_pairs: int = MAX_PAIRS,
             seed: int = 0) -> dict[str, float]:
    """FMR, FNMR, precision, recall and F1 of one threshold on a labelled set.

    For several thresholds on one set, calibrate it once and call
    `Calibration.rates_at` (its pairs are computed once).
    """
    if not (np.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"a threshold is a distance >= 0, got {threshold}")
    return calibrate(embeddings, labels, fmr_targets=(), max_pairs=max_pairs,
                     seed=seed).rates_at(threshold)


def describe(name: str, threshold: float, rates: dict[str, float]) -> str:
    """One line of a threshold and its rates, as the trainer and `sst_tf.calibrate` print it."""
    return (f"  {name:<12} distance {threshold:.4f}: FNMR {rates['fnmr']:.4f} at FMR "
            f"{rates['fmr']:.4f} (precision {rates['precision']:.4f}, F1 {rates['f1']:.4f})")


def report_lines(cal: dict | None) -> list[str]:
    """A run's thresholds with their rates on the test split, one line each.

    Args:
      cal: `metrics.json["calibration"]` of a run (None or empty: no lines).
    """
    if not cal or not isinstance(cal.get("thresholds"), dict):
        return []
    source = cal.get("source", "the training split")
    lines = [f"same/different thresholds from {source}, on the test split:"]
    return lines + [describe(name, t, cal["test"][name])
                    for name, t in cal["thresholds"].items() if name in cal.get("test", {})]


def parse_threshold(value: str | None) -> float | str | None:
    """A --threshold value as given: a distance (checked), a threshold's name, or None.

    Raises:
      ValueError: a negative or non-finite number.
    """
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    if not (np.isfinite(number) and number >= 0):
        raise ValueError(f"--threshold={value}: a distance must be a finite number >= 0")
    return number


def resolve_threshold(value: str | None, info: dict, export_name: str) -> float | None:
    """A --threshold value: a distance, or the name of one the export records.

    Args:
      value: None, a number, or a calibrated threshold's name ("best_f1",
        "fmr=0.001", ... as in the export's metadata).
      info: the export's `load_export_info`.
      export_name: how messages name the export.

    Raises:
      ValueError: a negative or non-finite number, or a name the export does
        not record (naming those it does).
    """
    parsed = parse_threshold(value)
    if parsed is None or isinstance(parsed, float):
        return parsed
    recorded = (info.get("metadata") or {}).get("thresholds") or {}
    if value not in recorded:
        known = ", ".join(recorded) or "none (an export from before calibration, or not of a run)"
        raise ValueError(f"--threshold={value}: {export_name} records no threshold of that name; "
                         f"it records: {known}. Pass a distance instead, e.g. --threshold=0.8")
    return float(recorded[value])
