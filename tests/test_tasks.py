"""Tasks are deterministic under a seed; data loaders fail clearly on missing or malformed files."""

import gzip

import numpy as np
import pytest
import torch

import l2o.tasks
from l2o.data.mnist import MNISTNotFoundError, load_mnist, read_idx
from l2o.tasks.digits import DigitsMLP, DigitsMLPFamily
from l2o.tasks.quadratic import QuadraticFamily, QuadraticTask


def _draw(task, seed, n_batches=3):
    g = torch.Generator().manual_seed(seed)
    params = task.init_params(g)
    batches = task.batches(g)
    return params, [next(batches) for _ in range(n_batches)]


def test_quadratic_same_seed_same_task_and_init():
    a, b, c = QuadraticTask(seed=5), QuadraticTask(seed=5), QuadraticTask(seed=6)
    assert torch.equal(a.W, b.W) and torch.equal(a.y, b.y)
    assert not torch.equal(a.W, c.W)
    pa, _ = _draw(a, 1)
    pb, _ = _draw(b, 1)
    pc, _ = _draw(a, 2)
    assert torch.equal(pa["theta"], pb["theta"]) and not torch.equal(pa["theta"], pc["theta"])
    assert a.W.shape == (10, 10) and pa["theta"].shape == (10,)
    theta = torch.randn(10)
    assert torch.allclose(a.loss({"theta": theta}), ((a.W @ theta - a.y) ** 2).sum())


def test_quadratic_family_draws_new_problem_per_task():
    family = QuadraticFamily()
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    t1, t2 = family.sample(g1), family.sample(g1)
    assert not torch.equal(t1.W, t2.W)
    assert torch.equal(family.sample(g2).W, t1.W)  # same generator state, same task


def test_digits_mlp_is_deterministic_under_a_seed():
    task = DigitsMLP()
    (pa, ba), (pb, bb), (pc, bc) = _draw(task, 3), _draw(task, 3), _draw(task, 4)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(ba, bb))
    assert not torch.equal(pa["layer0.weight"], pc["layer0.weight"])
    assert not torch.equal(ba[0][1], bc[0][1])
    assert ba[0][0].shape == (128, 64)
    assert pa["layer0.weight"].shape == (20, 64) and pa["layer1.weight"].shape == (10, 20)
    # The split is fixed by data_seed: a second instance sees the same data.
    assert torch.equal(DigitsMLP().x_train, task.x_train)
    assert not torch.equal(DigitsMLP(data_seed=1).x_train, task.x_train)


def test_digits_mlp_architecture_parameters():
    task = DigitsMLP(hidden=40, layers=2, activation="relu")
    params, _ = _draw(task, 0, 1)
    assert [tuple(params[f"layer{i}.weight"].shape) for i in range(3)] == [(40, 64), (40, 40), (10, 40)]
    loss = task.loss(params, None)
    assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="activation"):
        DigitsMLP(activation="swish")
    family = DigitsMLPFamily(hidden=5)
    assert family.sample(torch.Generator().manual_seed(0)).hidden == 5


def test_registry_builds_tasks():
    assert isinstance(l2o.tasks.get("digits_mlp", hidden=3), DigitsMLP)
    with pytest.raises(KeyError, match="Did you mean quadratic"):
        l2o.tasks.get("quadratc")


def _write_idx(path, array, code=0x08, gz=False):
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)


def _write_mnist(directory, n_train=6, n_test=4, gz=False):
    rng = np.random.RandomState(0)
    suffix = ".gz" if gz else ""
    _write_idx(directory / f"train-images-idx3-ubyte{suffix}", rng.randint(0, 256, (n_train, 28, 28)), gz=gz)
    _write_idx(directory / f"train-labels-idx1-ubyte{suffix}", rng.randint(0, 10, n_train), gz=gz)
    _write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", rng.randint(0, 256, (n_test, 28, 28)), gz=gz)
    _write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", rng.randint(0, 10, n_test), gz=gz)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loader_reads_small_idx_files(tmp_path, gz):
    _write_mnist(tmp_path, gz=gz)
    x_train, y_train, x_test, y_test = load_mnist(tmp_path)
    assert x_train.shape == (6, 784) and x_test.shape == (4, 784)
    assert y_train.dtype == torch.int64 and x_train.dtype == torch.float32
    assert 0.0 <= float(x_train.min()) and float(x_train.max()) <= 1.0
    raw = read_idx(tmp_path / ("train-labels-idx1-ubyte" + (".gz" if gz else "")))
    assert torch.equal(y_train, torch.from_numpy(raw.astype(np.int64)))
    task = DigitsMLP(data="mnist", mnist_dir=str(tmp_path), batch_size=4)
    params, _ = _draw(task, 0, 1)
    assert params["layer0.weight"].shape == (20, 784)


def test_mnist_loader_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("L2O_MNIST_DIR", raising=False)
    with pytest.raises(MNISTNotFoundError, match="L2O_MNIST_DIR"):
        load_mnist()
    with pytest.raises(MNISTNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(MNISTNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)  # empty directory
    _write_mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    good = labels.read_bytes()
    labels.write_bytes(good[:-2])
    with pytest.raises(ValueError, match="truncated"):
        load_mnist(tmp_path)
    labels.write_bytes(b"\x12\x34" + good[2:])
    with pytest.raises(ValueError, match="magic"):
        load_mnist(tmp_path)
    labels.write_bytes(good[:2] + b"\x42" + good[3:])
    with pytest.raises(ValueError, match="data type"):
        load_mnist(tmp_path)
    _write_idx(labels, np.zeros(5))  # 5 labels for 6 images
    with pytest.raises(ValueError, match="disagree"):
        load_mnist(tmp_path)
