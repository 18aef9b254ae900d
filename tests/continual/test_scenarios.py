"""Task streams: seeded, with three splits, the right heads and labels; permuted MNIST from IDX files."""

import numpy as np
import pytest
import torch

from l2o.continual import make_stream
from l2o.continual.scenarios import rotate_images


def test_permuted_digits_seeded_and_split():
    a, b = make_stream("permuted-digits", 3, seed=0), make_stream("permuted-digits", 3, seed=0)
    c = make_stream("permuted-digits", 3, seed=1)
    assert len(a) == 3 and not a.multi_head and a.classes == 10
    t0 = a[0]
    assert len(t0.y_train) + len(t0.y_val) + len(t0.y_test) == 1797
    torch.testing.assert_close(a[2].x_train, b[2].x_train)
    assert not torch.equal(a[2].x_train, c[2].x_train)
    # task 1 is task 0's pixels permuted, labels unchanged
    assert torch.equal(a[1].y_train, t0.y_train)
    assert torch.equal(a[1].x_train.sort(1).values, t0.x_train.sort(1).values)
    assert not torch.equal(a[1].x_train, t0.x_train)


def test_rotated_and_split_digits():
    r = make_stream("rotated-digits", 3, seed=0, rotation_step=90.0)
    torch.testing.assert_close(r[0].x_test, make_stream("permuted-digits", 1, seed=0)[0].x_test)
    # a quarter turn of an 8x8 image by interpolation is an exact pixel rotation
    img = r[0].x_test[:5].view(5, 8, 8)
    rotated = rotate_images(r[0].x_test[:5], 90.0, (8, 8)).view(5, 8, 8)
    assert any(torch.allclose(rotated, torch.rot90(img, k, (1, 2)), atol=1e-5) for k in (1, 3))
    torch.testing.assert_close(r[1].x_test[:5].view(5, 8, 8), rotated)
    s = make_stream("split-digits", 5, seed=0)
    assert s.multi_head and s.classes == 2
    for t in range(5):
        assert set(s[t].y_train.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="at most 5"):
        make_stream("split-digits", 6)


@pytest.mark.parametrize("kwargs,match", [({"scenario": "nope"}, "unknown scenario"),
                                          ({"scenario": "permuted-digits", "n_tasks": 0}, "positive"),
                                          ({"scenario": "permuted-digits", "n_tasks": -2}, "positive")])
def test_bad_streams(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_stream(**kwargs)


def test_unknown_task_id():
    s = make_stream("permuted-digits", 2, seed=0)
    with pytest.raises(ValueError, match="task id 2 not in this stream"):
        s[2]
    with pytest.raises(ValueError, match="unknown split"):
        s[0].split("dev")


def _write_idx(path, array):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.tobytes())


def test_permuted_mnist_from_local_idx(tmp_path):
    rng = np.random.RandomState(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte", rng.randint(0, 256, (60, 4, 4)).astype(np.uint8))
    _write_idx(tmp_path / "train-labels-idx1-ubyte", rng.randint(0, 10, 60).astype(np.uint8))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.randint(0, 256, (20, 4, 4)).astype(np.uint8))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.randint(0, 10, 20).astype(np.uint8))
    s = make_stream("permuted-mnist", 2, seed=0, mnist_dir=str(tmp_path), mnist_train=40)
    assert s.in_features == 16 and len(s[0].y_test) == 20
    assert len(s[0].y_train) == 40 and len(s[0].y_val) == 8
    assert torch.equal(s[1].x_test.sort(1).values, s[0].x_test.sort(1).values)
    with pytest.raises(FileNotFoundError):
        make_stream("permuted-mnist", 2, mnist_dir=str(tmp_path / "missing"))
