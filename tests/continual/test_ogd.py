"""OGD: the basis stays orthonormal, every projected step is orthogonal (float64) to the stored
output gradients of earlier tasks, and GTL/AVE/ALL match hand-computed gradients and projection."""

import pytest
import torch

from l2o.continual import OGD, OrthonormalBasis, output_gradients, train_sequence
from l2o.continual.methods import flat_grad
from l2o.continual.nets import MultiHeadMLP

from .conftest import make_tiny_stream


def test_basis_orthonormal_with_redundant_blocks():
    g = torch.Generator().manual_seed(0)
    basis = OrthonormalBasis(50, torch.float64)
    a = torch.randn(6, 50, generator=g, dtype=torch.float64)
    assert basis.add(a) == 6
    # a block that repeats two old directions (combinations) and brings three new ones
    b = torch.cat([torch.randn(2, 2, generator=g, dtype=torch.float64) @ a[:2],
                   torch.randn(3, 50, generator=g, dtype=torch.float64)])
    assert basis.add(b) == 3
    assert basis.add(a[3:5] * 1e3) == 0  # already in the span: nothing added
    V = basis.rows
    assert V.shape == (9, 50)
    torch.testing.assert_close(V @ V.T, torch.eye(9, dtype=torch.float64), atol=1e-12, rtol=0)
    # the span is right: every input vector is reproduced by its projection onto V
    for vecs in (a, b):
        torch.testing.assert_close(vecs @ V.T @ V, vecs, atol=1e-10, rtol=0)


def test_basis_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \[k, 5\]"):
        OrthonormalBasis(5).add(torch.zeros(2, 4))


def _linear_model():
    torch.manual_seed(0)
    m = MultiHeadMLP(3, (), classes=2, heads=1).double()
    return m


def _hand_gradients(x, y, variant):
    """Output gradients of f(x) = W x + b (W: 2x3, b: 2), flattened as [W (row-major), b]."""
    rows = []
    for xi, yi in zip(x, y):
        per_logit = []
        for c in range(2):
            gw = torch.zeros(2, 3, dtype=torch.float64)
            gw[c] = xi
            gb = torch.zeros(2, dtype=torch.float64)
            gb[c] = 1
            per_logit.append(torch.cat([gw.reshape(-1), gb]))
        if variant == "gtl":
            rows.append(per_logit[int(yi)])
        elif variant == "ave":
            rows.append((per_logit[0] + per_logit[1]) / 2)
        else:
            rows += per_logit
    return torch.stack(rows)


@pytest.mark.parametrize("variant", ["gtl", "ave", "all"])
def test_variants_on_a_linear_model_match_hand_computation(variant):
    m = _linear_model()
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([1, 0])
    G = output_gradients(m, x, y, 0, variant)
    H = _hand_gradients(x, y, variant)
    torch.testing.assert_close(G, H, atol=1e-12, rtol=0)
    # the projection against the stored gradients, by the normal equations: g - H^T (H H^T)^+ H g
    basis = OrthonormalBasis(H.shape[1], torch.float64)
    basis.add(G)
    g = torch.tensor([0.3, -1.2, 0.7, 2.0, 0.1, -0.4, 1.5, -0.8], dtype=torch.float64)
    expected = g - H.T @ torch.linalg.pinv(H @ H.T) @ (H @ g)
    torch.testing.assert_close(basis.project(g), expected, atol=1e-12, rtol=0)
    assert len(basis) == torch.linalg.matrix_rank(H)


def test_all_variant_has_one_row_per_logit_and_head_per_task():
    torch.manual_seed(0)
    m = MultiHeadMLP(4, (5,), classes=2, heads=3).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    G = output_gradients(m, x, torch.tensor([0, 1, 1]), 2, "all")
    assert G.shape == (6, sum(p.numel() for p in m.parameters()))
    # only task 2's head rows (and the body) have a gradient; the other heads' rows are zero
    head_w = G[:, 4 * 5 + 5:4 * 5 + 5 + 6 * 5].reshape(6, 6, 5)
    assert head_w[:, :4].abs().max() == 0 and head_w[:, 4:].abs().max() > 0
    with pytest.raises(ValueError, match="unknown OGD variant"):
        output_gradients(m, x, torch.tensor([0, 1, 1]), 0, "max")


def _record_steps(method, stored):
    """Wrap the method's hooks: keep every stored raw gradient block, and every step (parameter delta)."""
    steps, grads = [], []
    add = None

    def setup_wrapper(orig):
        def wrapped(stream, seed):
            nonlocal add
            orig(stream, seed)
            add = method.basis.add

            def recording_add(v):
                stored.append(v.clone())
                return add(v)

            method.basis.add = recording_add
        return wrapped

    before, after = method.before_step, method.after_step

    def before_step(t):
        before(t)
        grads.append((t, flat_grad(method.params()).clone()))
        method._p0 = torch.cat([p.detach().reshape(-1) for p in method.params()]).clone()

    def after_step(t):
        after(t)
        steps.append((t, torch.cat([p.detach().reshape(-1) for p in method.params()]) - method._p0))

    method.setup = setup_wrapper(method.setup)
    method.before_step, method.after_step = before_step, after_step
    return steps, grads


@pytest.mark.parametrize("variant,momentum", [("gtl", 0.0), ("ave", 0.0), ("all", 0.0), ("gtl", 0.9)])
def test_every_step_is_orthogonal_to_earlier_tasks_output_gradients(variant, momentum):
    stream = make_tiny_stream(tasks=3, n=64)
    method = OGD(lr=0.05, variant=variant, memory=5, momentum=momentum, hidden=(8,), dtype=torch.float64)
    stored = []
    steps, grads = _record_steps(method, stored)
    train_sequence(method, stream, seed=0, epochs=1, batch_size=16)
    assert len(stored) == 3 and len(method.basis) > 0
    V = method.basis.rows
    torch.testing.assert_close(V @ V.T, torch.eye(len(V), dtype=torch.float64), atol=1e-10, rtol=0)
    checked = 0
    for t, step in steps:
        if t == 0:
            continue
        earlier = torch.cat(stored[:t])
        scale = earlier.norm(dim=1) * step.norm()
        assert step.norm() > 0
        assert ((earlier @ step).abs() <= 1e-10 * scale).all(), (t, (earlier @ step).abs().max())
        checked += 1
    assert checked == 8  # 4 steps per task for tasks 1 and 2
    # and the steps are plain SGD on the projected gradient when there is no momentum
    if momentum == 0:
        for (t, step), (_, g) in zip(steps, grads):
            torch.testing.assert_close(step, -0.05 * g, atol=1e-14, rtol=0)


def test_adam_breaks_orthogonality_unless_the_update_is_projected():
    stream = make_tiny_stream(tasks=2, n=64)
    for project, leaks in (("gradient", True), ("update", False)):
        method = OGD(lr=0.01, variant="gtl", memory=5, hidden=(8,), dtype=torch.float64, project=project)
        method.make_optimizer = lambda m=method: torch.optim.Adam(m.params(), lr=m.lr)
        stored = []
        steps, _ = _record_steps(method, stored)
        train_sequence(method, stream, seed=0, epochs=1, batch_size=16)
        worst = max(float(((stored[0] @ s).abs() / (stored[0].norm(dim=1) * s.norm())).max()) for t, s in steps if t == 1)
        assert (worst > 1e-3) if leaks else (worst < 1e-10), (project, worst)
