"""l2o.compare, the one tuning protocol: the chosen candidate has the best tuning score, in the module
and in each of its users (l2o meta eval's Adam tuning, the L2L reproduction, the benchmark's selection)."""

import math
from types import SimpleNamespace

import pytest

from l2o.compare import choose, format_stats, mean_score, summarize, tune


def _assert_best(best, scores: dict):
    assert scores[best] == min(scores.values())


def test_tune_chooses_the_lowest_mean_over_the_tuning_seeds_and_ties_go_first():
    values = {0.1: [3.0, 1.0], 0.3: [1.0, 1.0], 1.0: [0.5, 1.5], 3.0: [0.0, math.inf]}
    calls = []
    result = tune(list(values), lambda lr, seed: (calls.append((lr, seed)), values[lr][seed - 7])[1], [7, 8])
    assert calls == [(lr, s) for lr in values for s in (7, 8)]
    assert result.scores == {"0.1": 2.0, "0.3": 1.0, "1.0": 1.0, "3.0": math.inf}  # a diverged run: inf
    assert result.best == 0.3 and result.score == 1.0  # tied with 1.0, listed first
    _assert_best(str(result.best), result.scores)
    assert not result.at_edge and tune([1.0, 2.0], lambda c, s: c, [0]).at_edge
    assert choose({"a": 2.0, "b": 1.0, "c": 1.0}) == "b"
    assert mean_score([1.0, 2.0]) == 1.5 and mean_score([1.0, math.nan]) == math.inf
    with pytest.raises(ValueError, match="candidate"):
        tune([], lambda c, s: 0.0, [0])
    with pytest.raises(ValueError, match="seed"):
        tune([1.0], lambda c, s: 0.0, [])


def test_summarize_gives_mean_and_sample_std_and_counts_divergence():
    st = summarize([1.0, 2.0, 4.0])
    assert st.mean == pytest.approx(7 / 3) and st.std == pytest.approx(math.sqrt(7 / 3)) and st.n == 3
    assert st.sem == pytest.approx(st.std / math.sqrt(3)) and st.diverged == 0
    assert format_stats(st) == f"{7 / 3:.4f} ± {math.sqrt(7 / 3):.4f}"
    bad = summarize([1.0, math.inf])
    assert bad.mean == math.inf and bad.diverged == 1 and format_stats(bad) == "diverged 1/2"
    assert format_stats(summarize([math.inf, math.inf])) == "diverged"
    assert summarize([0.5, math.nan], over_finite=True).mean == 0.5  # accuracies: over the runs that finished
    assert format_stats(summarize([0.25])) == "0.2500"  # no spread from one run


def test_meta_eval_tunes_adam_through_it():
    import torch

    from l2o.meta.evaluate import tune_adam
    from l2o.tasks.quadratic import QuadraticTask

    task = QuadraticTask(dim=4, seed=0, steps=10)
    lr, scores = tune_adam(task, 10, [1e-3, 1e-1, 10.0], tune_seeds=2)
    assert set(scores) == {"0.001", "0.1", "10.0"} and len(set(scores.values())) == 3
    _assert_best(str(lr), scores)
    assert torch.isfinite(torch.tensor(scores[str(lr)]))


def test_the_l2l_reproduction_tunes_its_baselines_through_it():
    from l2o.experiments import l2l

    config = l2l.L2LConfig(tune_seeds=1, lr_grid=(1e-3, 1e-2, 1e-1), settings=("quadratic",))
    lr, scores = l2l.tune("quadratic", "Adam", config)
    assert list(scores) == ["0.001", "0.01", "0.1"] and len(set(scores.values())) == 3
    _assert_best(repr(lr), scores)


def test_the_benchmark_selects_through_it(monkeypatch):
    from l2o.bench import runner

    losses = {(("lr", 0.1),): [0.5, 0.7], (("lr", 1.0),): [0.2, 0.4], (("lr", 3.0),): [0.1, None]}
    specs, rows = [], []
    for hparams, values in losses.items():
        for seed, value in enumerate(values):
            key = f"{hparams}-{seed}"
            specs.append(SimpleNamespace(key=key, hparams=hparams))
            rows.append({"run_key": key, "status": "failed" if value is None else "complete", "selection_loss": value})
    monkeypatch.setattr(runner, "_runs_for", lambda store, specs: rows)
    best, score = runner.select(None, specs)
    assert best == {"lr": 1.0} and score == pytest.approx(0.3)  # lr 3.0 lost a run: inf
