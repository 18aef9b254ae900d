"""SGLD samples what it should: a Gaussian's stationary variance and a linear model's posterior."""

from __future__ import annotations

import math

import pytest
import torch

from l2o.optim import SGLD
from l2o.optim.sgld import SampleCollector, collect_samples


@pytest.mark.parametrize(("step", "temperature"), [(0.5, 1.0), (0.5, 0.25), (0.1, 1.0)])
def test_gaussian_target_stationary_variance_matches_theory(step, temperature):
    # U(x) = x^2 / (2 s^2). With the update x <- x - (eps/2) x / s^2 + sqrt(eps T) xi the chain is
    # AR(1) with coefficient a = 1 - eps / (2 s^2), so its stationary variance is
    # eps T / (1 - a^2) = T s^2 / (1 - eps / (4 s^2)): the discretisation inflates T s^2.
    sigma2 = 1.0
    chains = 4000
    x = torch.zeros(chains, dtype=torch.float64, requires_grad=True)
    optimizer = SGLD([x], lr=step, temperature=temperature, generator=torch.Generator().manual_seed(0))

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


@pytest.mark.parametrize("batch_size", [200, 50])
def test_bayesian_linear_regression_posterior(batch_size):
    # Loss = minibatch mean of -log p(y_i | x_i, w) + prior / N, times N (num_data) = -log posterior.
    X, y, post_mean, post_cov = bayesian_linear_regression()
    n, d, noise, prior_precision = X.shape[0], X.shape[1], 0.5, 1.0
    chains = 200
    gen = torch.Generator().manual_seed(1)
    w = torch.zeros(chains, d, dtype=torch.float64, requires_grad=True)  # independent chains
    # The posterior precision is about n / noise^2 = 800 in every direction: a step of 1e-4 contracts
    # by 4% per step and inflates the variance by about eps * 800 / 4 = 2% (see the Gaussian test).
    step = 1e-4 if batch_size == n else 5e-5
    optimizer = SGLD([w], lr=step, num_data=n, generator=torch.Generator().manual_seed(2))

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
