"""SGLD samples what it should: a Gaussian's stationary variance and a linear model's posterior."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from l2o.optim import SGLD
from l2o.optim._philox import philox4x32, philox_normal
from l2o.optim.sgld import SampleCollector, collect_samples


@pytest.mark.parametrize("noise", ["generator", "philox"])
@pytest.mark.parametrize(("step", "temperature"), [(0.5, 1.0), (0.5, 0.25), (0.1, 1.0)])
def test_gaussian_target_stationary_variance_matches_theory(step, temperature, noise):
    # U(x) = x^2 / (2 s^2). With the update x <- x - (eps/2) x / s^2 + sqrt(eps T) xi the chain is
    # AR(1) with coefficient a = 1 - eps / (2 s^2), so its stationary variance is
    # eps T / (1 - a^2) = T s^2 / (1 - eps / (4 s^2)): the discretisation inflates T s^2.
    sigma2 = 1.0
    chains = 4000
    x = torch.zeros(chains, dtype=torch.float64, requires_grad=True)
    optimizer = SGLD([x], lr=step, temperature=temperature, generator=torch.Generator().manual_seed(0), noise=noise)

    def closure():
        optimizer.zero_grad()
        loss = (x ** 2).sum() / (2 * sigma2)
        loss.backward()
        return loss

    samples = collect_samples(optimizer, closure, num_steps=600, burn_in=200, thin=4)
    assert samples.shape == (100, chains)
    variance = samples.var().item()
    theory = temperature * sigma2 / (1 - step / (4 * sigma2))
    # 4000 chains x 100 draws, AR coefficient <= 0.95^4 after thinning: standard error < 1%.
    assert variance == pytest.approx(theory, rel=0.03)
    assert abs(samples.mean().item()) < 0.03 * math.sqrt(theory)
    if step == 0.5:  # the inflation is visible: the continuous-time answer T s^2 is rejected
        assert abs(variance - temperature * sigma2) > 0.08 * temperature * sigma2


def bayesian_linear_regression(seed=0, n=200, d=3, noise=0.5, prior_precision=1.0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w_true = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    y = X @ w_true + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    precision = prior_precision * torch.eye(d, dtype=torch.float64) + X.T @ X / noise ** 2
    covariance = torch.linalg.inv(precision)
    mean = covariance @ X.T @ y / noise ** 2
    return X, y, mean, covariance


@pytest.mark.parametrize("noise_source", ["generator", "philox"])
@pytest.mark.parametrize("batch_size", [200, 50])
def test_bayesian_linear_regression_posterior(batch_size, noise_source):
    # Loss = minibatch mean of -log p(y_i | x_i, w) + prior / N, times N (num_data) = -log posterior.
    X, y, post_mean, post_cov = bayesian_linear_regression()
    n, d, noise, prior_precision = X.shape[0], X.shape[1], 0.5, 1.0
    chains = 200
    gen = torch.Generator().manual_seed(1)
    w = torch.zeros(chains, d, dtype=torch.float64, requires_grad=True)  # independent chains
    # The posterior precision is about n / noise^2 = 800 in every direction: a step of 1e-4 contracts
    # by 4% per step and inflates the variance by about eps * 800 / 4 = 2% (see the Gaussian test).
    step = 1e-4 if batch_size == n else 5e-5
    optimizer = SGLD([w], lr=step, num_data=n, generator=torch.Generator().manual_seed(2),
                     noise=noise_source)

    def closure():
        optimizer.zero_grad()
        index = torch.randint(n, (chains, batch_size), generator=gen) if batch_size < n else None
        if index is None:
            residual = y - w @ X.T
        else:
            residual = y[index] - torch.einsum("cbd,cd->cb", X[index], w)
        nll = (residual ** 2).mean(dim=1) / (2 * noise ** 2)
        prior = prior_precision * (w ** 2).sum(dim=1) / (2 * n)
        loss = (nll + prior).sum()  # chains are independent: summing keeps their gradients apart
        loss.backward()
        return loss

    burn_in = 300 if batch_size == n else 600
    samples = collect_samples(optimizer, closure, num_steps=burn_in + 1000, burn_in=burn_in, thin=10)
    draws = samples.reshape(-1, chains, d).reshape(-1, d)
    mean = draws.mean(0)
    cov = torch.cov(draws.T)
    std = post_cov.diagonal().sqrt()
    assert torch.all((mean - post_mean).abs() < 0.1 * std), (mean, post_mean)
    # Relative error of the covariance, measured in the posterior's own scale.
    scaled_error = (cov - post_cov) / torch.outer(std, std)
    tolerance = 0.06 if batch_size == n else 0.12  # minibatch gradient noise inflates it slightly
    assert scaled_error.abs().max() < tolerance, (cov, post_cov)


def test_same_generator_seed_same_chain_and_seeds_differ():
    def chain(seed):
        x = torch.zeros(5, requires_grad=True)
        optimizer = SGLD([x], lr=0.1, generator=torch.Generator().manual_seed(seed))
        for _ in range(3):
            x.grad = x.detach().clone()
            optimizer.step()
        return x.detach()

    assert torch.equal(chain(0), chain(0))
    assert not torch.equal(chain(0), chain(1))


def test_step_size_schedule():
    # Zero temperature, constant unit gradient: the step t moves by eps_t * N / 2 exactly.
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = SGLD([x], lr=0.3, num_data=4, temperature=0.0, lr_offset=2.0, lr_decay=0.6)
    previous = 0.0
    for t in range(1, 6):
        x.grad = torch.ones(1, dtype=torch.float64)
        optimizer.step()
        moved = previous - x.item()
        assert moved == pytest.approx(0.3 * (2.0 + t) ** -0.6 * 4 / 2, rel=1e-12)
        previous = x.item()


def test_sample_collector_burn_in_and_thinning():
    collector = SampleCollector(burn_in=3, thin=2, max_samples=2)
    p = torch.zeros(2)
    for step in range(1, 11):
        p.fill_(step)
        collector(step, [p])  # the l2o.train params_hook signature
    assert [s[0][0].item() for s in collector.samples] == [5.0, 7.0]
    assert collector.flat().shape == (2, 2)
    with pytest.raises(ValueError, match="thin"):
        SampleCollector(thin=0)
    with pytest.raises(ValueError, match="no samples"):
        SampleCollector(burn_in=5).stacked()


# -- noise="philox" ------------------------------------------------------------------------------

# Random123's known-answer vectors for Philox4x32-10 (counter, key, output), as published with
# the reference implementation (kat_vectors).
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize(("counter", "key", "expected"), PHILOX_KAT)
def test_philox_matches_the_known_answer_vectors(counter, key, expected):
    words = philox4x32(*[torch.tensor([c], dtype=torch.int64) for c in counter],
                       *[torch.tensor(k, dtype=torch.int64) for k in key])
    assert tuple(int(w) for w in words) == expected


def test_philox_normal_is_standard_normal_and_streams_are_independent():
    key = torch.tensor([12345, 678], dtype=torch.int64)
    n = 1_000_000
    z = philox_normal(n, torch.tensor(0), torch.tensor(1), key, dtype=torch.float64)
    assert z.shape == (n,)
    assert abs(z.mean().item()) < 5 / math.sqrt(n) and z.var().item() == pytest.approx(1.0, abs=5 * math.sqrt(2 / n))
    # Kolmogorov-Smirnov distance to N(0, 1): the 0.1% critical value for n = 1e6 is about 0.00195.
    ecdf = torch.arange(1, n + 1, dtype=torch.float64) / n
    distance = (torch.special.ndtr(z.sort().values) - ecdf).abs().max().item()
    assert distance < 0.00195
    # another tensor (stream), another step, another key: uncorrelated draws
    others = [philox_normal(n, torch.tensor(1), torch.tensor(1), key, dtype=torch.float64),
              philox_normal(n, torch.tensor(0), torch.tensor(2), key, dtype=torch.float64),
              philox_normal(n, torch.tensor(0), torch.tensor(1), key + 1, dtype=torch.float64)]
    for other in others:
        assert abs(torch.corrcoef(torch.stack([z, other]))[0, 1].item()) < 5 / math.sqrt(n)
    # consecutive numbers of one draw are uncorrelated too (Box-Muller pairs share a radius)
    assert abs(torch.corrcoef(torch.stack([z[:-1], z[1:]]))[0, 1].item()) < 5 / math.sqrt(n)
    assert abs(torch.corrcoef(torch.stack([z[:-1].abs(), z[1:].abs()]))[0, 1].item()) < 0.01


def philox_chain(seed, steps, state=None, resume_at=None):
    x = torch.zeros(37, requires_grad=True)
    optimizer = SGLD([x], lr=0.1, noise="philox", generator=torch.Generator().manual_seed(seed))
    saved = None
    for step in range(steps):
        x.grad = x.detach().clone()
        optimizer.step()
        if step + 1 == resume_at:
            saved = (x.detach().clone(), copy.deepcopy(optimizer.state_dict()))  # steps mutate it in place
    return x.detach(), saved


def test_philox_chains_are_reproducible_and_resume_identically():
    full, (x_mid, state) = philox_chain(0, 6, resume_at=3)
    assert torch.equal(full, philox_chain(0, 6)[0])
    assert not torch.equal(full, philox_chain(1, 6)[0])
    # a fresh optimizer (other seed) loaded from the state dict continues the first chain
    x = x_mid.clone().requires_grad_()
    optimizer = SGLD([x], lr=0.1, noise="philox", generator=torch.Generator().manual_seed(99))
    optimizer.load_state_dict(state)
    for _ in range(3):
        x.grad = x.detach().clone()
        optimizer.step()
    assert torch.equal(x.detach(), full)


def test_philox_noise_of_the_compiled_update_equals_the_eager_formula():
    from l2o.optim import _philox
    from l2o.optim.sgld import _fused_langevin_

    key, stream, step = torch.tensor([5, 7], dtype=torch.int64), torch.tensor(3), torch.tensor(11)
    for dtype in (torch.float32, torch.float64):
        grad = torch.randn(1001, generator=torch.Generator().manual_seed(0), dtype=dtype)
        eager, compiled = torch.zeros(1001, dtype=dtype), torch.zeros(1001, dtype=dtype)
        drift, scale = torch.tensor(-0.5, dtype=dtype), torch.tensor(0.1, dtype=dtype)
        counter = _philox.block_counter(5000)  # longer than needed, as SGLD's kept counter is
        _philox.langevin_update_(eager, grad, drift, scale, stream, step, key, counter)
        assert _fused_langevin_(compiled, grad, drift, scale, stream, step, key, counter)  # ran compiled
        torch.testing.assert_close(compiled, eager)  # same integers; float maths to rounding
        expected = -0.5 * grad + 0.1 * philox_normal(1001, stream, step, key, dtype=dtype)
        torch.testing.assert_close(eager, expected)



def test_philox_inside_a_compiled_step_matches_eager():
    torch._dynamo.reset()
    start = torch.randn(6, 5, generator=torch.Generator().manual_seed(4))
    eager_x, compiled_x = start.clone().requires_grad_(), start.clone().requires_grad_()
    eager = SGLD([eager_x], lr=0.05, noise="philox", generator=torch.Generator().manual_seed(8))
    compiled = SGLD([compiled_x], lr=0.05, noise="philox", generator=torch.Generator().manual_seed(8))
    step = torch.compile(compiled.step)
    for _ in range(3):
        eager_x.grad, compiled_x.grad = eager_x.detach().clone(), compiled_x.detach().clone()
        eager.step()
        step()
    torch.testing.assert_close(compiled_x, eager_x)


def test_philox_noise_for_bfloat16_parameters_is_made_in_float32():
    x = torch.zeros(20000, dtype=torch.bfloat16, requires_grad=True)
    optimizer = SGLD([x], lr=0.01, noise="philox", generator=torch.Generator().manual_seed(0))
    x.grad = torch.zeros_like(x)
    optimizer.step()
    # one step from zero with no drift: x = sqrt(lr) * N(0, 1), rounded to bfloat16
    z = x.detach().float() / 0.1
    assert abs(z.mean().item()) < 0.05 and z.std().item() == pytest.approx(1.0, abs=0.03)
    assert z.abs().max().item() > 3.0  # the tails are there (Box-Muller in float32, not bfloat16)



def test_philox_falls_back_to_the_eager_update_with_a_warning_when_compiling_fails(uncompilable):
    import l2o.optim.sgld as sgld_module

    fused = uncompilable(sgld_module, "_fused_langevin_")
    x = torch.zeros(50, requires_grad=True)
    optimizer = SGLD([x], lr=0.1, noise="philox", generator=torch.Generator().manual_seed(0))
    x.grad = torch.zeros_like(x)
    with pytest.warns(RuntimeWarning, match="could not compile its fused step.*no C\\+\\+ compiler"):
        optimizer.step()
    assert fused.failed and not fused(x)  # no retry every step
    expected = 0.1 ** 0.5 * philox_normal(50, optimizer.state[x]["noise_stream"], torch.tensor(1),
                                          optimizer._philox_key)
    torch.testing.assert_close(x.detach(), expected)
