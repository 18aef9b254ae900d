"""Batched episodes: stacked instances give the same losses and meta-gradients as a loop."""

import copy
import dataclasses
import itertools

import pytest
import torch

from l2o.learned.mlp import MLPRule
from l2o.meta.episode import MeanLogRatio, batched_loss_fn, start_episode, stack_batches, stack_dicts
from l2o.tasks.digits import DigitsMLP
from l2o.tasks.mlp_problems import DATASETS, MLPProblemFamily, MLPTask, TaskConfig, build_task


def _trained_like(rule):
    """Random non-trivial weights (a fresh rule makes deliberately tiny steps)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in rule.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return rule


def _double(task):
    task.x_train, task.x_test = task.x_train.double(), task.x_test.double()
    if not task.classification:
        task.y_train, task.y_test = task.y_train.double(), task.y_test.double()
    return task


@pytest.mark.parametrize("dataset", ["classification", "regression"])
def test_batched_and_looped_meta_gradients_agree(dataset):
    torch.manual_seed(0)
    rule = MLPRule(hidden=8).double()
    config = TaskConfig(dataset, hidden=8, layers=1, activation="tanh", batch_size=16, horizon=50, in_dim=8, n_classes=3)
    tasks = [_double(build_task(config, seed)) for seed in (1, 2, 3)]
    seeds = [11, 12, 13]
    batched = start_episode(rule, tasks, seeds, 50, dtype=torch.float64).advance(rule, 4, MeanLogRatio())
    grads_batched = torch.autograd.grad(batched.meta_loss, list(rule.parameters()))
    looped = [torch.zeros_like(g) for g in grads_batched]
    losses = []
    for task, seed in zip(tasks, seeds):
        single = start_episode(rule, [task], [seed], 50, dtype=torch.float64).advance(rule, 4, MeanLogRatio())
        losses.append(single.losses)
        for acc, g in zip(looped, torch.autograd.grad(single.meta_loss / len(tasks), list(rule.parameters()))):
            acc += g
    for a, b in zip(grads_batched, looped):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert any(float(g.abs().max()) > 1e-6 for g in grads_batched)  # the comparison is not 0 == 0
    torch.testing.assert_close(torch.tensor(batched.losses, dtype=torch.float64),
                               torch.tensor(losses, dtype=torch.float64).mean(0), rtol=1e-9, atol=1e-12)


def test_meta_training_under_step_adaptation_steps_as_the_deployed_optimizer_does():
    """``start_episode(..., adapt=kappa)``: each task's tensors follow the steps that
    ``LearnedOptimizer(adapt=kappa)`` takes on that task alone (one shared equation)."""
    from l2o.learned.optimizer import LearnedOptimizer

    torch.manual_seed(0)
    rule = _trained_like(MLPRule(hidden=8, adam_ratios=True)).double()
    config = TaskConfig("regression", hidden=6, layers=1, activation="tanh", batch_size=16, horizon=50, in_dim=5)
    tasks = [_double(build_task(config, seed)) for seed in (1, 2)]
    seeds, kappa, steps = [21, 22], 0.3, 6
    episode = start_episode(rule, tasks, seeds, 50, dtype=torch.float64, adapt=kappa)
    with torch.no_grad():
        episode.advance(rule, steps, MeanLogRatio())
    plain = start_episode(rule, tasks, seeds, 50, dtype=torch.float64)
    with torch.no_grad():
        plain.advance(rule, steps, MeanLogRatio())
    for i, (task, seed) in enumerate(zip(tasks, seeds)):
        gen = torch.Generator().manual_seed(seed)
        params = {k: v.double().requires_grad_(True) for k, v in task.init_params(gen).items()}
        stream = task.batches(gen)
        optimizer = LearnedOptimizer(list(params.values()), rule=rule, adapt=kappa)
        for _ in range(steps):
            optimizer.zero_grad()
            task.loss(params, next(stream)).backward()
            optimizer.step()
        for k, p in params.items():
            torch.testing.assert_close(episode.params[k][i], p.detach(), rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(episode.state[k]["log_scale"][i], optimizer.state[p]["log_scale"])
    moved = max(float(episode.state[k]["log_scale"].abs().max()) for k in episode.params)
    assert moved > 0.1  # the multipliers moved, and the steps differ from the unadapted ones
    assert not torch.allclose(episode.params["layer0.weight"], plain.params["layer0.weight"])


def test_vmap_fallback_matches_a_loop():
    task = DigitsMLP(hidden=5, activation="relu", batch_size=8)
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    params = [task.init_params(g) for g in gens]
    batches = [next(task.batches(g)) for g in gens]
    batched = batched_loss_fn(task)(stack_dicts(params), stack_batches(batches))
    looped = torch.stack([task.loss(p, b) for p, b in zip(params, batches)])
    torch.testing.assert_close(batched, looped)


def test_per_task_loss_matches_task_loss():
    config = TaskConfig("classification", hidden=6, layers=2, activation="sigmoid", batch_size=10, horizon=5,
                        in_dim=8, n_classes=5)
    tasks = [build_task(config, s) for s in (4, 5)]
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    params = [t.init_params(g) for t, g in zip(tasks, gens)]
    batches = [next(t.batches(g)) for t, g in zip(tasks, gens)]
    stacked_params = {k: v.requires_grad_() for k, v in stack_dicts(params).items()}
    stacked = tasks[0].per_task_loss(stacked_params, stack_batches(batches))
    looped = [t.loss({k: v.requires_grad_() for k, v in p.items()}, b) for t, p, b in zip(tasks, params, batches)]
    torch.testing.assert_close(stacked, torch.stack(looped))
    # and the same gradients (the batched cross-entropy is written as logsumexp - target logit)
    stacked_grads = torch.autograd.grad(stacked.sum(), list(stacked_params.values()))
    for i, (loss, p) in enumerate(zip(looped, params)):
        for g_stacked, g_one in zip(stacked_grads, torch.autograd.grad(loss, list(p.values()))):
            torch.testing.assert_close(g_stacked[i], g_one)


def test_family_covers_every_dataset_and_runs():
    family = MLPProblemFamily(horizon=(5, 10))
    gen = torch.Generator().manual_seed(0)
    seen = set()
    rule = MLPRule(hidden=4)
    for _ in range(40):
        tasks = family.sample_batch(gen, 2)
        seen.add(tasks[0].name)
        assert all(isinstance(t, MLPTask) for t in tasks)
        if len(seen) == len(DATASETS):
            break
    assert seen == {f"{d}_mlp" for d in DATASETS}
    for dataset in DATASETS:
        config = TaskConfig(dataset, 8, 1, "relu", 16 if dataset != "quadratic" else None, 5, in_dim=8, n_classes=3)
        tasks = [build_task(config, s) for s in (0, 1)]
        with torch.no_grad():
            result = start_episode(rule, tasks, [0, 1], 5).advance(rule, 3, MeanLogRatio())
        assert result.finite and len(result.losses) == 3


def test_lowdim_problems_are_a_few_numbers_at_varied_scales():
    family = MLPProblemFamily(datasets=("lowdim",), horizon=(5, 10))
    gen = torch.Generator().manual_seed(0)
    scales, dims = [], set()
    rule = MLPRule(hidden=4, tensor_features=True)
    for _ in range(30):
        tasks = family.sample_batch(gen, 2)
        params = tasks[0].init_params(torch.Generator().manual_seed(0))
        assert set(params) == {"layer0.weight", "layer0.bias"} and params["layer0.bias"].numel() == 1
        dims.add(params["layer0.weight"].numel())
        scales += [float(t.x_train.abs().mean()) for t in tasks]
        with torch.no_grad():
            result = start_episode(rule, tasks, [0, 1], 5).advance(rule, 3, MeanLogRatio())
        assert result.finite
    assert dims == {1, 2, 3}
    assert max(scales) / min(scales) > 20  # data scales spread over decades
    assert "lowdim" not in DATASETS  # opt-in: the default family (and the shipped recipe) is unchanged


def test_illcond_problems_have_the_condition_numbers_they_are_drawn_with():
    family = MLPProblemFamily(datasets=("illcond",), horizon=(5, 10))
    gen = torch.Generator().manual_seed(0)
    conditions, dims = [], set()
    rule = MLPRule(hidden=4)
    for _ in range(20):
        tasks = family.sample_batch(gen, 2)
        for t in tasks:
            eig = torch.linalg.eigvalsh(t.x_train.T.double() @ t.x_train.double())
            conditions.append(float(eig.max() / eig.min()))
            dims.add(t.x_train.shape[1])
        with torch.no_grad():
            assert start_episode(rule, tasks, [0, 1], 5).advance(rule, 3, MeanLogRatio()).finite
    assert dims <= {10, 20, 50} and len(dims) > 1
    assert 10 * 0.99 <= min(conditions) and max(conditions) <= 1e4 * 1.01  # kappa drawn in [10, 1e4]
    assert max(conditions) / min(conditions) > 30  # and spread over decades
    assert "illcond" not in DATASETS  # opt-in


def test_family_rejects_bad_arguments():
    with pytest.raises(ValueError, match="datasets"):
        MLPProblemFamily(datasets=("imagenet",))
    with pytest.raises(ValueError, match="activations"):
        MLPProblemFamily(activations=("gelu",))
    with pytest.raises(ValueError, match="horizon"):
        MLPProblemFamily(horizon=(10, 5))


def test_param_scales_reparameterize_the_same_problem():
    """With factors s, the optimizer trains phi = theta / s: the same losses, gradients s times
    theta's, in the single and the stacked forward passes."""
    scales = (3.0, 0.1, 0.5, 20.0)
    plain = TaskConfig("classification", hidden=6, layers=1, activation="tanh", batch_size=10, horizon=5,
                       in_dim=8, n_classes=3)
    task, scaled = build_task(plain, 4), build_task(dataclasses.replace(plain, param_scales=scales), 4)
    theta = task.init_params(torch.Generator().manual_seed(0))
    phi = scaled.init_params(torch.Generator().manual_seed(0))
    for t, p, s in zip(theta.values(), phi.values(), scales):
        torch.testing.assert_close(p * s, t)
    batch = next(task.batches(torch.Generator().manual_seed(1)))
    theta = {k: v.requires_grad_() for k, v in theta.items()}
    phi = {k: v.requires_grad_() for k, v in phi.items()}
    loss_theta, loss_phi = task.loss(theta, batch), scaled.loss(phi, batch)
    torch.testing.assert_close(loss_phi, loss_theta)
    grads_theta = torch.autograd.grad(loss_theta, list(theta.values()))
    grads_phi = torch.autograd.grad(loss_phi, list(phi.values()))
    for g_t, g_p, s in zip(grads_theta, grads_phi, scales):
        torch.testing.assert_close(g_p, g_t * s)
    stacked = scaled.per_task_loss(stack_dicts([phi, phi]), stack_batches([batch, batch]))
    torch.testing.assert_close(stacked, torch.stack([loss_phi, loss_phi]))
    with pytest.raises(ValueError, match="param_scales"):
        build_task(dataclasses.replace(plain, param_scales=(1.0, 2.0)), 4)  # 4 tensors, 2 factors


def test_family_param_scale_draws_shared_factors_per_architecture():
    family = MLPProblemFamily(horizon=(5, 10), param_scale=(0.1, 10.0))
    gen = torch.Generator().manual_seed(0)
    rule = MLPRule(hidden=4)
    factors = []
    for _ in range(10):
        tasks = family.sample_batch(gen, 2)
        assert tasks[0].param_scales == tasks[1].param_scales  # one architecture: the instances stack
        assert len(tasks[0].param_scales) == len(tasks[0].init_params(torch.Generator()))
        factors += tasks[0].param_scales
        with torch.no_grad():
            assert start_episode(rule, tasks, [0, 1], 5).advance(rule, 3, MeanLogRatio()).finite
    assert 0.1 <= min(factors) and max(factors) <= 10.0 and max(factors) / min(factors) > 20
    assert family.describe()["param_scale"] == [0.1, 10.0]
    # off by default: no factors drawn
    default, explicit = MLPProblemFamily(), MLPProblemFamily(param_scale=(1.0, 1.0))
    assert "param_scale" not in default.describe()
    configs = [f.sample_config(torch.Generator().manual_seed(3)) for f in (default, explicit)]
    assert configs[0] == configs[1] and configs[0].param_scales == ()
    with pytest.raises(ValueError, match="param_scale"):
        MLPProblemFamily(param_scale=(0.0, 1.0))


def test_shared_data_gather_draws_the_same_minibatches_as_each_task():
    config = TaskConfig("digits", hidden=4, layers=1, activation="relu", batch_size=16, horizon=5)
    tasks = [build_task(config, s) for s in range(3)]
    rule = MLPRule(hidden=4)
    episode = start_episode(rule, tasks, [7, 8, 9], 5)
    reference = episode.clone()
    x, y = episode.next_batch()  # the one-gather path (all tasks share the digits tensors)
    expected = stack_batches([next(t.batches(g)) for t, g in zip(reference.tasks, reference.generators)])
    assert torch.equal(x, expected[0]) and torch.equal(y, expected[1])


@pytest.mark.parametrize("shared", [True, False])
def test_episode_lives_on_the_rules_device(shared):
    # PyTorch's meta device stands in for a GPU: every tensor of the episode must follow the rule there.
    if shared:  # digits instances draw from the same tensors: one gather for all of them
        tasks = [build_task(TaskConfig("digits", hidden=4, layers=1, activation="relu", batch_size=8, horizon=5), s)
                 for s in (0, 1)]
    else:
        config = TaskConfig("regression", hidden=4, layers=1, activation="tanh", batch_size=8, horizon=5, in_dim=3)
        tasks = [build_task(config, s) for s in (0, 1)]
    rule = MLPRule(hidden=4).to("meta")
    episode = start_episode(rule, tasks, [0, 1], 5)
    assert episode.device.type == "meta"
    tensors = [*episode.params.values(), *(t for s in episode.state.values() for t in s.values()),
               *episode.next_batch(), *episode.clone().next_batch()]
    assert {t.device.type for t in tensors} == {"meta"}


def test_episode_without_batches_refuses_a_device_it_cannot_feed():
    from l2o.tasks.quadratic import QuadraticTask

    # The quadratic keeps W and y to itself: its loss would mix a CPU matrix with device parameters.
    episode = start_episode(MLPRule(hidden=4).to("meta"), [QuadraticTask(dim=3)], [0], 5)
    with pytest.raises(ValueError, match="only run on the CPU"):  # at its first batch
        episode.next_batch()


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("estimator", ["bptt", "es", "pes"])
def test_meta_training_on_cuda_follows_the_cpu(estimator):
    from l2o.meta.trainer import MetaConfig, MetaTrainer

    def train(device):
        torch.manual_seed(0)
        rule = MLPRule(hidden=8).to(device)
        family = MLPProblemFamily(datasets=("digits", "regression"), widths=(8,), depths=(1,), activations=("tanh",),
                               batch_sizes=(16,), horizon=(30, 30))
        config = MetaConfig(estimator=estimator, outer_steps=4, batch_size=3, groups=2, unroll=5, pairs=2,
                               val_every=2, val_steps=5)
        trainer = MetaTrainer(rule, family, config, directory=None, log=False)
        start = torch.nn.utils.parameters_to_vector(rule.parameters()).detach().cpu()
        trainer.train(progress_bar=False)
        return start, torch.nn.utils.parameters_to_vector(rule.parameters()).detach().cpu(), trainer.summary.best_val

    (start, cpu, cpu_val), (_, gpu, gpu_val) = train("cpu"), train("cuda")
    assert float((cpu - start).abs().max()) > 1e-3  # the rule was trained, not left as it was
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-4)
    assert abs(gpu_val - cpu_val) < 1e-3


def test_consistent_problems_have_a_minimum_near_zero_at_varied_scales():
    family = MLPProblemFamily(datasets=("consistent",), horizon=(5, 10))
    gen = torch.Generator().manual_seed(0)
    floors, conditions, scales, dims = [], [], [], set()
    rule = MLPRule(hidden=4)
    for _ in range(20):
        tasks = family.sample_batch(gen, 2)
        for t in tasks:
            x = t.x_train.double()
            design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)  # weights and bias
            best = torch.linalg.lstsq(design, t.y_train.double().unsqueeze(1)).solution
            minimum = float((design @ best).squeeze(1).sub(t.y_train.double()).square().mean())
            start = t.evaluate(t.init_params(torch.Generator().manual_seed(0)), "train")["loss"]
            floors.append(minimum / start)
            eig = torch.linalg.eigvalsh(x.T @ x)
            conditions.append(float(eig.max() / eig.min()))
            scales.append(float(t.y_train.square().mean().sqrt()))
            dims.add(x.shape[1])
        with torch.no_grad():
            assert start_episode(rule, tasks, [0, 1], 5).advance(rule, 3, MeanLogRatio()).finite
    assert 0 < min(floors) and max(floors) < 1e-4  # reachable minimum far below the initial loss
    assert dims <= {1, 2, 3, 10, 20, 50} and len(dims) >= 4
    assert max(c for c in conditions if c > 1.01) > 100  # condition numbers up to 1e3 ...
    assert max(conditions) <= 1e3 * 1.01
    assert max(scales) / min(scales) > 100  # ... and targets spread over decades
    assert "consistent" not in DATASETS  # opt-in


def _regression_module_family(width: int | None = None):
    """A family of one's own: a small tanh network (of hidden ``width``, or 8 and 16 in turn when
    None) regressing a fixed linear target, built from ``ModuleTask``."""
    from l2o.tasks import FixedFamily, ModuleTask

    widths = itertools.cycle((8, 16))

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen)
    y = x @ torch.randn(8, generator=gen) + 0.1 * torch.randn(256, generator=gen)

    def net(hidden):
        return torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def task(seed):
        hidden = width or next(widths)
        return ModuleTask(lambda: net(hidden), x[:192], y[:192], x[192:], y[192:], batch_size=32, steps=40)

    return FixedFamily(task, name="mine"), net, x[:192], y[:192]


def test_family_training_meta_trains_on_a_family_of_ones_own_modules(tmp_path):
    """Any TaskFamily whose sample() gives tasks of one architecture trains with MetaTrainer
    (TaskFamily.sample_batch); the trained rule then deploys as a LearnedOptimizer on the module."""
    from l2o import LearnedOptimizer
    from l2o.meta.trainer import MetaConfig, MetaTrainer

    family, net, x, y = _regression_module_family(width=16)
    rule = MLPRule(hidden=8)
    untrained = copy.deepcopy(rule)
    config = MetaConfig(outer_steps=40, batch_size=4, groups=2, unroll=10, val_every=0, checkpoint_every=20)
    MetaTrainer(rule, family, config, directory=tmp_path, log=False).train(progress_bar=False)
    assert (tmp_path / "last.safetensors").is_file()

    def final_loss(r, seed):
        torch.manual_seed(seed)
        model = net(16)
        opt = LearnedOptimizer(model.parameters(), rule=r)
        for _ in range(40):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x).squeeze(1), y).backward()
            opt.step()
        return torch.nn.functional.mse_loss(model(x).squeeze(1), y).item()

    for seed in range(100, 103):  # networks the meta-training never saw
        before, after = final_loss(untrained, seed), final_loss(rule, seed)
        assert after < 0.1 * before, (seed, before, after)  # the fresh rule's steps are tiny (about 12 -> 0.3)


def test_episode_of_tasks_that_cannot_stack_says_why():
    family, _, _, _ = _regression_module_family(width=None)  # widths 8, 16, 8, 16
    tasks = family.sample_batch(torch.Generator().manual_seed(0), 4)
    with pytest.raises(ValueError, match="same parameters to stack them"):
        start_episode(MLPRule(hidden=4), tasks, [0, 1, 2, 3], 10)
