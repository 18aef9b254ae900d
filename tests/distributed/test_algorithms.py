"""Algorithms in the simulator: DORE's checks, identities, residual decay, determinism, bytes."""

import math
import warnings

import pytest
import torch

from l2o.distributed import DORE, make_algorithm, simulate
from l2o.distributed.problems import make_problem


def test_dore_defaults_are_the_papers():
    dore = DORE()
    assert (dore.alpha, dore.beta, dore.eta) == (0.1, 1.0, 1.0)
    assert dore.uplink.levels == 1 and dore.uplink.block == 256 and dore.uplink.norm == "inf"


def test_dore_rejects_divergent_settings():
    with pytest.raises(ValueError, match="alpha < 2/\\(1\\+omega\\)"):
        DORE(uplink="qsgd:s=1,block=256,norm=2", alpha=0.5)  # omega = 16: 0.5 * 17 >= 2
    with pytest.raises(ValueError, match="no error compensation"):
        DORE(downlink="randk:ratio=0.25", eta=0.0, beta=1.0)  # omega = 3: 1 * 4 >= 2
    with pytest.raises(ValueError, match="grows by eta"):
        DORE(downlink="randk:ratio=0.25", eta=1.0, beta=0.25)  # omega = 3 attained: e grows 3x
    for kwargs, msg in [({"alpha": 0}, "alpha"), ({"beta": 1.5}, "beta"), ({"eta": -1}, "eta")]:
        with pytest.raises(ValueError, match=msg):
            DORE(**kwargs)
    with pytest.warns(UserWarning, match="sufficient conditions"):
        DORE(warn=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DORE(uplink="qsgd:s=8,block=16", downlink="qsgd:s=8,block=16", alpha=0.5, beta=0.5, warn=True)


def test_rejected_setting_really_diverges():
    """The eta check: random-k on the downlink (omega = 3, attained) with eta = 1 blows up;
    eta below 1/sqrt(omega) does not."""
    problem = make_problem("least_squares", workers=2, dim=20, examples=200)
    alg = DORE(uplink="identity", downlink="randk:ratio=0.25", beta=0.25, eta=0.5)
    alg.eta = 1.0  # bypass the check to show what it prevents
    bad = simulate(problem, alg, lr=0.05, steps=150)
    good = simulate(problem, DORE(uplink="identity", downlink="randk:ratio=0.25", beta=0.25, eta=0.5),
                    lr=0.05, steps=150)
    assert bad["diverged"] or bad["loss"][-1] > 100 * good["loss"][-1]
    assert math.isfinite(good["loss"][-1]) and good["loss"][-1] < good["loss"][0]


def test_identity_dore_is_full_precision_sgd():
    problem = make_problem("digits_mlp", workers=3, hidden=8, dtype=torch.float64)
    full = simulate(problem, make_algorithm("full"), lr=0.3, steps=10)
    dore = simulate(problem, DORE("identity", "identity", alpha=1.0, beta=1.0, eta=0.0), lr=0.3, steps=10)
    assert max(abs(a - b) for a, b in zip(full["params"], dore["params"])) < 1e-12
    qsgd_identity = simulate(problem, make_algorithm("qsgd", "identity"), lr=0.3, steps=10)
    assert qsgd_identity["params"] == full["params"]


def test_simulator_is_seeded():
    problem = make_problem("digits_logistic", workers=2)
    a = simulate(problem, make_algorithm("dore"), lr=0.5, steps=5, seed=1)
    b = simulate(problem, make_algorithm("dore"), lr=0.5, steps=5, seed=1)
    c = simulate(problem, make_algorithm("dore"), lr=0.5, steps=5, seed=2)
    assert a["params"] == b["params"] and a["params"] != c["params"]


def test_bits_counted_match_payload_sizes():
    problem = make_problem("digits_logistic", workers=4)
    for name in ("full", "qsgd", "dore"):
        alg = make_algorithm(name)
        run = simulate(problem, alg, lr=0.5, steps=3)
        wire = alg.bytes_per_step([640, 10], 4)
        assert run["bits"] == [8 * wire.total * (k + 1) for k in range(3)]
    full, dore = make_algorithm("full").bytes_per_step([640, 10], 4), make_algorithm("dore").bytes_per_step([640, 10], 4)
    assert full.total == 2 * 4 * 650 * 4
    assert full.total / dore.total > 10


def test_dore_residuals_decay_exponentially_on_least_squares():
    """Full local gradients: DORE's compressed quantities shrink geometrically (the paper's
    linear-regression figure); DoubleSqueeze's do not."""
    problem = make_problem("least_squares", workers=4, dim=20, examples=200)
    dore = simulate(problem, make_algorithm("dore"), lr=0.1, steps=200, record_residuals=True)
    ds = simulate(problem, make_algorithm("doublesqueeze"), lr=0.1, steps=200, record_residuals=True)
    w, s = dore["worker_residual"], dore["server_residual"]
    assert w[-1] < 1e-4 * w[0] and s[-1] < 1e-4 * s[0]
    # geometric: the log-norm falls by a similar amount in each half
    assert math.log(w[99] / w[199]) > 0.3 * math.log(w[0] / w[99])
    assert ds["server_residual"][-1] > 1e-2 * ds["server_residual"][0]


def test_bad_arguments():
    problem = make_problem("digits_logistic", workers=2)
    with pytest.raises(ValueError, match="lr"):
        simulate(problem, make_algorithm("full"), lr=0.0, steps=1)
    with pytest.raises(ValueError, match="steps"):
        simulate(problem, make_algorithm("full"), lr=0.1, steps=0)
    with pytest.raises(ValueError, match="unknown algorithm"):
        make_algorithm("adam")
    with pytest.raises(ValueError, match="unknown problem"):
        make_problem("cifar", workers=2)
    with pytest.raises(ValueError, match="no compressor"):
        make_algorithm("full", "qsgd")
