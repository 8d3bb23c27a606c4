import numpy as np

from trainer.metrics import MIN_SUPPORT, average_precision, calibrate_thresholds, precision_recall_at_k


def test_average_precision_known_values():
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([0, 1, 1])) == (1 / 2 + 2 / 3) / 2
    assert np.isnan(average_precision(np.array([0.5]), np.array([0])))


def test_calibrated_threshold_reaches_target_precision_with_most_recall():
    rng = np.random.default_rng(0)
    targets = rng.random(2000) < 0.3
    scores = np.clip(targets * 0.35 + rng.random(2000) * 0.65, 0, 1)
    (t,) = calibrate_thresholds(scores[:, None], targets[:, None].astype(float), 0.9)
    above = scores >= t
    assert targets[above].mean() >= 0.9
    lower = scores >= t - 0.02  # any lower cut loses the precision
    assert targets[lower].mean() < 0.9 or lower.sum() == above.sum()


def test_fallback_when_target_precision_is_unreachable():
    scores = np.linspace(0, 1, 100)
    targets = np.zeros(100)
    targets[::2] = 1  # precision never exceeds ~0.5 at any cut
    (t,) = calibrate_thresholds(scores[:, None], targets[:, None], 0.9)
    assert t >= 0.5
    (never,) = calibrate_thresholds(scores[:, None], np.zeros((100, 1)), 0.9)
    assert never == 1.0
    few = np.zeros(100)
    few[-(MIN_SUPPORT - 1) :] = 1  # perfectly separable but too few positives to trust
    (t,) = calibrate_thresholds(scores[:, None], few[:, None], 0.9)
    assert t >= 0.5


def test_precision_recall_at_k():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7]])
    targets = np.array([[1, 0, 0], [0, 1, 1]])
    p, r = precision_recall_at_k(scores, targets, k=2)
    assert p == (0.5 + 1.0) / 2 and r == 1.0
