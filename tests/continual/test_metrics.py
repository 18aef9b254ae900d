"""Continual metrics on a hand-made accuracy matrix, and their bad inputs."""

import pytest

from l2o.continual.metrics import average_accuracy, backward_transfer, forgetting, forward_transfer, summarize

R = [[0.90, 0.30, 0.10],
     [0.95, 0.80, 0.20],
     [0.60, 0.75, 0.85]]
B = [0.10, 0.10, 0.15]


def test_metrics_by_hand():
    assert average_accuracy(R) == pytest.approx((0.60 + 0.75 + 0.85) / 3)
    # BWT: final minus just-after-training: ((0.60 - 0.90) + (0.75 - 0.80)) / 2
    assert backward_transfer(R) == pytest.approx(-0.175)
    # forgetting: best ever minus final: ((0.95 - 0.60) + (0.80 - 0.75)) / 2 -- differs from -BWT
    assert forgetting(R) == pytest.approx(0.20)
    # FWT: accuracy on task j just before training it, minus the untrained network's
    assert forward_transfer(R, B) == pytest.approx(((0.30 - 0.10) + (0.20 - 0.15)) / 2)
    s = summarize(R, B)
    assert s["forgetting"] == pytest.approx(0.20) and s["bwt"] == pytest.approx(-0.175)


def test_one_task_has_no_transfer():
    s = summarize([[0.7]], [0.1])
    assert s["avg_accuracy"] == pytest.approx(0.7)
    assert s["forgetting"] is None and s["bwt"] is None and s["fwt"] is None


@pytest.mark.parametrize("bad,match", [([], "non-empty"), ([[0.5, 0.4]], "square"),
                                       ([[0.5, 0.1], [float("nan"), 0.2]], "non-finite")])
def test_bad_matrices(bad, match):
    with pytest.raises(ValueError, match=match):
        average_accuracy(bad)


def test_baseline_length_checked():
    with pytest.raises(ValueError, match="one entry per task"):
        forward_transfer(R, [0.1])
