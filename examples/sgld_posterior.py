"""SGLD: the stationary variance of a constant step, and a Bayesian linear regression posterior.

1. Gaussian target U(x) = x^2 / (2 s^2), s = 1, full gradient, constant step eps: the chain's
   stationary variance is T s^2 / (1 - eps / (4 s^2)) (an AR(1) process), which tends to the
   target's T s^2 as eps -> 0: the O(eps) bias of a constant step. 4000 parallel chains,
   several step sizes, two temperatures.
2. Bayesian linear regression (200 points, 3 features, noise 0.5, prior N(0, I)): minibatches of
   20 with num_data=200, Welling & Teh's decaying step a (b + t)^-0.55 against a constant step;
   the sample mean and covariance of 200 chains are compared with the analytic posterior.

    python examples/sgld_posterior.py        # writes docs/methods/figures/sgld_posterior.{json,png}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from l2o.optim import SGLD
from l2o.optim.sgld import collect_samples


def gaussian_variance(step, temperature, chains=4000, seed=0):
    x = torch.zeros(chains, dtype=torch.float64, requires_grad=True)
    optimizer = SGLD([x], lr=step, temperature=temperature, generator=torch.Generator().manual_seed(seed))

    def closure():
        optimizer.zero_grad()
        loss = 0.5 * (x ** 2).sum()
        loss.backward()
        return loss

    burn_in = int(20 / step)  # about 10 relaxation times
    samples = collect_samples(optimizer, closure, num_steps=burn_in + 400, burn_in=burn_in, thin=4)
    return samples.var().item()


def linear_regression_posterior(schedule, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n, d, noise = 200, 3, 0.5
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + noise * torch.randn(n, generator=gen,
                                                                                      dtype=torch.float64)
    covariance = torch.linalg.inv(torch.eye(d, dtype=torch.float64) + X.T @ X / noise ** 2)
    mean = covariance @ X.T @ y / noise ** 2

    chains, batch = 200, 20
    w = torch.zeros(chains, d, dtype=torch.float64, requires_grad=True)
    kwargs = dict(lr=5e-5) if schedule == "constant" else dict(lr=1e-3, lr_offset=100.0, lr_decay=0.55)
    optimizer = SGLD([w], num_data=n, generator=torch.Generator().manual_seed(seed + 1), **kwargs)

    def closure():
        optimizer.zero_grad()
        index = torch.randint(n, (chains, batch), generator=gen)
        residual = y[index] - torch.einsum("cbd,cd->cb", X[index], w)
        loss = ((residual ** 2).mean(1) / (2 * noise ** 2) + (w ** 2).sum(1) / (2 * n)).sum()
        loss.backward()
        return loss

    samples = collect_samples(optimizer, closure, num_steps=4000, burn_in=1000, thin=10).reshape(-1, d)
    std = covariance.diagonal().sqrt()
    return dict(
        schedule=schedule, settings=kwargs,
        final_step=kwargs["lr"] * ((kwargs.get("lr_offset", 1.0) + 4000) ** -kwargs.get("lr_decay", 0.0)),
        posterior_mean=mean.tolist(), sample_mean=samples.mean(0).tolist(),
        mean_error_in_posterior_sd=((samples.mean(0) - mean) / std).abs().max().item(),
        posterior_sd=std.tolist(), sample_sd=samples.std(0).tolist(),
        max_covariance_error_relative=((torch.cov(samples.T) - covariance) / torch.outer(std, std)).abs().max().item(),
    ), samples, mean, covariance


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/methods/figures/sgld_posterior"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps = [0.05, 0.1, 0.2, 0.4, 0.8]
    rows = []
    print("Gaussian target, s^2 = 1: stationary variance of SGLD with a constant step")
    print(f"{'eps':>6s} {'T':>5s} {'measured':>9s} {'theory T/(1-eps/4)':>19s} {'target T':>9s}")
    for temperature in (1.0, 0.5):
        for step in steps:
            measured = gaussian_variance(step, temperature)
            theory = temperature / (1 - step / 4)
            rows.append(dict(step=step, temperature=temperature, measured=measured, theory=theory))
            print(f"{step:6.2f} {temperature:5.2f} {measured:9.4f} {theory:19.4f} {temperature:9.4f}")

    blr = {}
    print("\nBayesian linear regression, 200 chains, minibatch 20 of 200:")
    for schedule in ("constant", "decaying"):
        blr[schedule], samples, mean, covariance = linear_regression_posterior(schedule)
        r = blr[schedule]
        print(f"  {schedule:9s} {r['settings']}: max |mean error| = {r['mean_error_in_posterior_sd']:.3f} posterior sd, "
              f"max |cov error| = {r['max_covariance_error_relative']:.3f} (relative to sd_i sd_j)")
        print(f"            sample sd {[round(v, 4) for v in r['sample_sd']]} vs posterior sd "
              f"{[round(v, 4) for v in r['posterior_sd']]}")
        if schedule == "constant":
            plotted = samples, mean, covariance

    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(
        dict(command="python examples/sgld_posterior.py", gaussian=rows, linear_regression=blr), indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for temperature, color in ((1.0, "C0"), (0.5, "C1")):
        sel = [r for r in rows if r["temperature"] == temperature]
        left.plot([r["step"] for r in sel], [r["measured"] for r in sel], "o", color=color,
                  label=f"measured, T={temperature}")
        fine = torch.linspace(0.0, 0.85, 50)
        left.plot(fine, temperature / (1 - fine / 4), "-", color=color, label=f"T/(1-eps/4), T={temperature}")
        left.axhline(temperature, color=color, linestyle=":", linewidth=1)
    left.set_xlabel("constant step eps")
    left.set_ylabel("stationary variance")
    left.set_title("Gaussian target (s^2=1): variance vs step")
    left.legend(fontsize=8)
    samples, mean, covariance = plotted
    for i in range(samples.shape[1]):
        centred = (samples[:, i] - mean[i]) / covariance[i, i].sqrt()
        right.hist(centred.numpy(), bins=60, density=True, histtype="step", label=f"w{i}")
    grid = torch.linspace(-4, 4, 200)
    right.plot(grid, torch.exp(-grid ** 2 / 2) / (2 * torch.pi) ** 0.5, "k--", label="analytic posterior")
    right.set_xlabel("(w_i - posterior mean) / posterior sd")
    right.set_title("Linear regression: SGLD samples (constant step)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{args.out}.png", dpi=120)
    print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
