"""iMAML, MAML and first-order MAML: CG, the implicit gradient against closed forms and unrolled
gradients, memory against inner steps, checkpoint/resume, few-shot families, bad inputs."""

import math

import numpy as np
import pytest
import torch

from l2o.hyper.fewshot import BatchedMLP, SinusoidFamily, TaskBatch, digits_families
from l2o.hyper.imaml import (InnerConfig, adapt, batched_conjugate_gradient, graph_memory, implicit_meta_gradient,
                             meta_gradient, meta_train)
from l2o.linalg import conjugate_gradient

D = torch.float64


def _spd(g, batch, n):
    m = torch.randn(batch, n, n, generator=g, dtype=D)
    return m @ m.transpose(1, 2) / n + 0.5 * torch.eye(n, dtype=D)


def test_batched_cg_matches_per_task_cg_and_direct_solves():
    g = torch.Generator().manual_seed(0)
    a = _spd(g, 4, 6)
    b = {"w": torch.randn(4, 6, generator=g, dtype=D)}
    matvec = lambda v: {"w": torch.einsum("bij,bj->bi", a, v["w"])}  # noqa: E731
    for iters in (2, 6):
        x = batched_conjugate_gradient(matvec, b, iters)["w"]
        for i in range(4):
            ref = conjugate_gradient(lambda v: a[i] @ v, b["w"][i], max_iter=iters).x
            torch.testing.assert_close(x[i], ref)
    torch.testing.assert_close(x, torch.linalg.solve(a, b["w"]))  # n iterations are exact


class QuadraticModel:
    """Task i: support loss 0.5 w'A_i w - b_i'w, query loss 0.5 w'w - c_i'w (= 0.5||w - c_i||^2 + const)."""

    regression = True

    def task_losses(self, params, x, y):
        w = params["w"]
        return 0.5 * torch.einsum("bi,bij,bj->b", w, x, w) - torch.einsum("bi,bi->b", y, w)

    def task_metric(self, params, x, y):
        return self.task_losses(params, x, y)


def _quadratic(lam, seed=1, batch=3, n=5):
    g = torch.Generator().manual_seed(seed)
    a = _spd(g, batch, n)
    b, c = torch.randn(batch, n, generator=g, dtype=D), torch.randn(batch, n, generator=g, dtype=D)
    theta = {"w": torch.randn(n, generator=g, dtype=D)}
    eye = torch.eye(n, dtype=D).expand(batch, n, n)
    phi_star = torch.linalg.solve(a + lam * torch.eye(n, dtype=D), (lam * theta["w"] + b).unsqueeze(-1)).squeeze(-1)
    # d phi*/d theta = lam (A + lam I)^-1, so the meta-gradient is lam (A + lam I)^-1 (phi* - c)
    exact = lam * torch.linalg.solve(a + lam * torch.eye(n, dtype=D), (phi_star - c).unsqueeze(-1)).squeeze(-1)
    return a, b, c, theta, TaskBatch(a, b, eye, c), phi_star, exact


def test_implicit_gradient_matches_the_closed_form_on_a_quadratic_inner_problem():
    lam = 2.0
    a, b, c, theta, batch, phi_star, exact = _quadratic(lam)
    config = InnerConfig(method="imaml", inner_steps=400, inner_lr=0.2, lam=lam, cg_steps=5)
    phi = adapt(QuadraticModel(), theta, batch, config)
    torch.testing.assert_close(phi["w"], phi_star)
    grad, stats = meta_gradient(QuadraticModel(), theta, batch, config)
    torch.testing.assert_close(grad["w"], exact.mean(0))
    assert stats["cg_stopped"] == 0
    # the one-task form through l2o.linalg.conjugate_gradient
    model = QuadraticModel()
    one = implicit_meta_gradient(lambda p: model.task_losses({"w": p["w"][None]}, a[:1], b[:1])[0],
                                 lambda p: 0.5 * torch.sum((p["w"] - c[0]) ** 2), {"w": phi_star[0]}, lam, 5)
    torch.testing.assert_close(one["w"], exact[0])


def test_implicit_gradient_approaches_the_unrolled_one_as_the_inner_problem_is_solved():
    torch.manual_seed(0)
    model = BatchedMLP([1, 8, 1], activation="tanh", regression=True)
    theta = model.init(torch.Generator().manual_seed(3), D)
    batch = SinusoidFamily(k_shot=5, k_query=5, amplitude=(0.5, 1.0)).sample(torch.Generator().manual_seed(4), 2).to(D)
    lam = 5.0

    def unrolled(steps):
        leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        cfg = InnerConfig(method="imaml", inner_steps=steps, inner_lr=0.02, lam=lam)
        phi = adapt(model, leaves, batch, cfg, create_graph=True, proximal=True)
        q = model.task_losses(phi, batch.x_q, batch.y_q).mean()
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(q, list(leaves.values()))])

    reference = unrolled(400)
    errors = []
    for steps in (2, 10, 200):
        cfg = InnerConfig(method="imaml", inner_steps=steps, inner_lr=0.02, lam=lam, cg_steps=40)
        g = torch.cat([v.reshape(-1) for v in meta_gradient(model, theta, batch, cfg)[0].values()])
        errors.append(float((g - reference).norm() / reference.norm()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3, errors


def test_maml_meta_gradient_matches_finite_differences_and_fomaml_differs():
    model = BatchedMLP([1, 6, 1], activation="tanh", regression=True)
    theta = model.init(torch.Generator().manual_seed(0), D)
    batch = SinusoidFamily(k_shot=4, k_query=4).sample(torch.Generator().manual_seed(1), 2).to(D)
    cfg = InnerConfig(method="maml", inner_steps=2, inner_lr=0.05)
    grad, _ = meta_gradient(model, theta, batch, cfg)

    def meta_loss(th):
        phi = adapt(model, th, batch, cfg)
        return float(model.task_losses(phi, batch.x_q, batch.y_q).mean())

    eps = 1e-6
    for i in (0, 3):
        up = {k: v.clone() for k, v in theta.items()}
        down = {k: v.clone() for k, v in theta.items()}
        up["layer0.weight"].view(-1)[i] += eps
        down["layer0.weight"].view(-1)[i] -= eps
        fd = (meta_loss(up) - meta_loss(down)) / (2 * eps)
        assert math.isclose(float(grad["layer0.weight"].view(-1)[i]), fd, rel_tol=1e-5, abs_tol=1e-9)
    first, _ = meta_gradient(model, theta, batch, InnerConfig(method="fomaml", inner_steps=2, inner_lr=0.05))
    assert not torch.allclose(first["layer0.weight"], grad["layer0.weight"])


def test_maml_memory_grows_with_inner_steps_and_imaml_memory_does_not():
    model = BatchedMLP([1, 20, 20, 1], regression=True)
    theta = model.init(torch.Generator().manual_seed(0))
    batch = SinusoidFamily().sample(torch.Generator().manual_seed(1), 3)
    peaks = {}
    for method in ("maml", "imaml"):
        for steps in (1, 3, 9):
            with graph_memory() as stats:
                meta_gradient(model, theta, batch, InnerConfig(method=method, inner_steps=steps, inner_lr=0.01))
            peaks[method, steps] = stats["peak"]
    assert peaks["maml", 9] > 2 * peaks["maml", 3] > 2 * peaks["maml", 1] > 0
    assert peaks["imaml", 1] == peaks["imaml", 3] == peaks["imaml", 9] > 0


def test_outer_loop_checkpoint_and_resume_give_the_same_run(tmp_path):
    model = BatchedMLP([1, 10, 1], regression=True)
    family = SinusoidFamily(k_shot=5, k_query=5)
    cfg = InnerConfig(method="imaml", inner_steps=2, inner_lr=0.01)
    kw = dict(meta_batch=3, meta_lr=1e-2, seed=7)
    straight, hist = meta_train(model, family, cfg, steps=4, **kw)
    ckpt = tmp_path / "ck.safetensors"
    meta_train(model, family, cfg, steps=2, checkpoint=str(ckpt), checkpoint_every=1, **kw)
    resumed, hist2 = meta_train(model, family, cfg, steps=4, checkpoint=str(ckpt), resume=True, **kw)
    assert hist2 == hist
    for k in straight:
        assert torch.equal(straight[k], resumed[k])
    with pytest.raises(ValueError, match="another configuration"):
        meta_train(model, family, InnerConfig(method="maml", inner_steps=2, inner_lr=0.01), steps=4,
                   checkpoint=str(ckpt), resume=True, **kw)


def test_bad_inputs_are_rejected_clearly():
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        InnerConfig(method="imaml", lam=0.0)
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        InnerConfig(method="imaml", lam=-1.0)
    with pytest.raises(ValueError, match="cg_steps must be a whole number >= 1"):
        InnerConfig(method="imaml", cg_steps=0)
    with pytest.raises(ValueError, match="method must be one of"):
        InnerConfig(method="reptile")
    with pytest.raises(ValueError, match="cg_steps"):
        batched_conjugate_gradient(lambda v: v, {"w": torch.ones(2, 3)}, 0)
    with pytest.raises(ValueError, match="lam"):
        implicit_meta_gradient(lambda p: p["w"].sum(), lambda p: p["w"].sum(), {"w": torch.ones(2)}, 0.0, 3)
    with pytest.raises(ValueError, match="inner_lr"):
        InnerConfig(method="maml", inner_lr=0.0)


def test_sinusoid_family_is_seeded_and_in_range():
    fam = SinusoidFamily(k_shot=10, k_query=7)
    a = fam.sample(torch.Generator().manual_seed(5), 50)
    b = fam.sample(torch.Generator().manual_seed(5), 50)
    assert torch.equal(a.x_s, b.x_s) and torch.equal(a.y_q, b.y_q)
    assert a.x_s.shape == (50, 10, 1) and a.y_q.shape == (50, 7)
    assert float(a.x_s.abs().max()) <= 5.0 and float(torch.cat([a.y_s, a.y_q], 1).abs().max()) <= 5.0


def test_digits_few_shot_classes_are_disjoint_and_labels_permuted():
    train, test = digits_families(n_way=5, k_shot=1, k_query=3)
    batch = train.sample(torch.Generator().manual_seed(0), 4)
    assert batch.x_s.shape == (4, 5, 64) and batch.y_q.shape == (4, 15)
    assert sorted(batch.y_s[0].tolist()) == [0, 1, 2, 3, 4]
    distances = torch.cdist(torch.cat(train.classes), torch.cat(test.classes))
    assert float(distances.min()) > 0  # no meta-test image among the meta-training ones
    with pytest.raises(ValueError, match="disjoint"):
        digits_families(train_classes=(0, 1, 2), test_classes=(2, 3, 4))


def test_omniglot_loader_reads_local_pngs(tmp_path):
    from matplotlib import pyplot as plt

    from l2o.data.omniglot import OmniglotNotFoundError, load_omniglot, omniglot_families

    rng = np.random.RandomState(0)
    for split, alphabets in (("images_background", ("Latin", "Greek")), ("images_evaluation", ("Runic",))):
        for alphabet in alphabets:
            for ch in range(3):
                folder = tmp_path / split / alphabet / f"character{ch + 1:02d}"
                folder.mkdir(parents=True)
                for i in range(4):
                    plt.imsave(folder / f"{ch}_{i}.png", (rng.rand(12, 12) > 0.5).astype(float), cmap="gray")
    classes, names = load_omniglot(tmp_path, "background", size=6)
    assert len(classes) == 6 and names[0] == "Greek/character01" and classes[0].shape == (4, 6, 6)
    assert 0.0 <= float(classes[0].min()) and float(classes[0].max()) <= 1.0
    rotated, _ = load_omniglot(tmp_path, "background", size=6, rotations=True)
    assert len(rotated) == 24 and torch.equal(rotated[1], torch.rot90(rotated[0], 1, dims=(1, 2)))
    train, test = omniglot_families(tmp_path, n_way=3, k_shot=1, k_query=2, size=6)
    batch = test.sample(torch.Generator().manual_seed(0), 2)
    assert batch.x_s.shape == (2, 3, 36)
    with pytest.raises(OmniglotNotFoundError):
        load_omniglot(tmp_path / "missing")
    with pytest.raises(ValueError, match="split"):
        load_omniglot(tmp_path, "test")


def test_a_diverging_meta_training_stops_with_a_clear_error():
    from l2o.hyper.imaml import MetaTrainingDiverged

    model = BatchedMLP([1, 10, 1], regression=True)
    with pytest.raises(MetaTrainingDiverged, match="not finite"):
        meta_train(model, SinusoidFamily(k_shot=5, k_query=5), InnerConfig(method="maml", inner_steps=3, inner_lr=1e6),
                   steps=5, meta_batch=2, meta_lr=1e-2, seed=0)
