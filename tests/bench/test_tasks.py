import math

import numpy as np
import pytest
import torch

from l2o import tasks
from l2o.tasks.deepobs import deepobs_quadratic_hessian, deepobs_random_rotation


def test_quadratic_deep_construction():
    hessian = deepobs_quadratic_hessian()
    assert np.allclose(hessian, hessian.T)
    eig = np.sort(np.linalg.eigvalsh(hessian))
    assert ((eig[:90] > 0) & (eig[:90] < 1)).all() and ((eig[90:] > 30) & (eig[90:] < 60)).all()
    rot = deepobs_random_rotation(5, np.random.RandomState(0))
    assert np.allclose(rot @ rot.T, np.eye(5)) and np.linalg.det(rot) == pytest.approx(1.0)
    task = tasks.get("quadratic_deep")
    assert task.steps == 700 and task.batch_size == 128 and task.metric == "test_loss"
    params = task.init_params(torch.Generator().manual_seed(0))
    assert torch.equal(params["theta"], torch.ones(100))
    # the test loss is DeepOBS's: mean over the whole test batches of 0.5 (theta - x)^T Q (theta - x)
    x = np.random.RandomState(43).normal(0.0, 0.6, (1000, 100)).astype(np.float32)[:896].astype(np.float64)
    diff = 1.0 - x
    expected = 0.5 * np.einsum("ni,ij,nj->n", diff, hessian, diff).mean()
    assert task.evaluate(params, "test")["loss"] == pytest.approx(expected, rel=1e-4)


def _deepobs_hessian_transcribed() -> np.ndarray:
    """DeepOBS's quadratic_deep Hessian, transcribed independently of l2o.tasks.deepobs from
    DeepOBS's definition: one RandomState(42) stream draws the 90 + 10 eigenvalues first, then the
    rotation (subgroup algorithm: an angle for SO(2), then for each d = 2..99 a Gaussian vector of
    size d + 1 and the reflection through e1 - v applied to the rotation embedded one dimension up);
    the rotation is negated and Q = R^T diag(lambda) R."""
    rng = np.random.RandomState(42)
    lam = np.concatenate((rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)))
    angle = 2 * np.pi * rng.uniform()
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    for d in range(2, 100):
        v = rng.normal(size=(d + 1, 1))
        v /= np.linalg.norm(v)
        u = -v
        u[0, 0] += 1.0
        u /= np.linalg.norm(u)
        embedded = np.eye(d + 1)
        embedded[1:, 1:] = rotation
        rotation = embedded - 2.0 * np.outer(u, u.T @ embedded)
    rotation = -rotation
    return rotation.T @ np.diag(lam) @ rotation


def test_quadratic_deep_hessian_and_initial_loss_are_deepobs():
    """Pinned against DeepOBS's definition (drawing the rotation before the eigenvalues, or any
    other order or algorithm, changes every entry)."""
    expected = _deepobs_hessian_transcribed()
    np.testing.assert_allclose(deepobs_quadratic_hessian(), expected, rtol=0, atol=1e-12)
    # entries of DeepOBS's Q, as the transcription above computes them
    for (i, j), value in {(0, 0): 6.221429443252536, (3, 7): 0.39749823341668267, (99, 42): 0.5673896676333543,
                          (50, 50): 3.58440748098036}.items():
        assert deepobs_quadratic_hessian()[i, j] == pytest.approx(value, rel=1e-12)
        assert expected[i, j] == pytest.approx(value, rel=1e-12)
    task = tasks.get("quadratic_deep")
    torch.testing.assert_close(task.hessian, torch.from_numpy(expected).float())
    # the initial test loss DeepOBS reports (theta = 1, its test batches: the first 896 points)
    loss = task.evaluate(task.init_params(torch.Generator()), "test")["loss"]
    assert loss == pytest.approx(353.4468, abs=2e-3)


def test_quadratic_deep_batches_are_epochs_without_replacement():
    task = tasks.get("quadratic_deep")
    stream = task.batches(torch.Generator().manual_seed(1))
    epoch = torch.cat([next(stream) for _ in range(7)])
    assert epoch.shape == (896, 100)
    assert torch.unique(epoch, dim=0).shape[0] == 896  # no point twice within an epoch


@pytest.mark.parametrize("name, start, value", [
    ("two_d_rosenbrock", (-0.5, 1.5), (1 + 0.5) ** 2 + 100 * (1.5 - 0.25) ** 2),
    ("two_d_beale", (-4.5, 4.5), (1.5 + 4.5 - 4.5 * 4.5) ** 2 + (2.25 + 4.5 - 4.5 * 4.5 ** 2) ** 2
     + (2.625 + 4.5 - 4.5 * 4.5 ** 3) ** 2),
    ("two_d_branin", (2.5, 12.5), (12.5 - 5.1 / (4 * math.pi ** 2) * 6.25 + 5 / math.pi * 2.5 - 6) ** 2
     + 10 * (1 - 1 / (8 * math.pi)) * math.cos(2.5) + 10),
])
def test_two_d_problems(name, start, value):
    task = tasks.get(name)
    params = task.init_params(torch.Generator())
    assert (float(params["u"]), float(params["v"])) == start
    assert task.evaluate(params, "test")["loss"] == pytest.approx(value, rel=1e-5)  # noise-free test set
    batch = next(task.batches(torch.Generator().manual_seed(0)))
    noisy = float(task.loss(params, batch))
    mean = batch.mean(0)
    assert noisy == pytest.approx(value + start[0] * float(mean[0]) + start[1] * float(mean[1]), rel=1e-5)
    assert "loss" in task.evaluate(params, "valid")


def test_digits_tasks():
    for name in ("digits_logreg", "digits_cnn"):
        task = tasks.get(name)
        assert task.metric == "test_accuracy"
        params = task.init_params(torch.Generator().manual_seed(0))
        again = task.init_params(torch.Generator().manual_seed(0))
        assert all(torch.equal(params[k], again[k]) for k in params)
        x, y = next(task.batches(torch.Generator().manual_seed(0)))
        assert task.forward(params, x).shape == (128, 10)
        result = task.evaluate(params, "test")
        assert 0.0 <= result["accuracy"] <= 1.0
    with pytest.raises(ValueError, match="init"):
        tasks.get("digits_logreg", init="normal")
    with pytest.raises(ValueError, match="channels"):
        tasks.get("digits_cnn", channels=0)
