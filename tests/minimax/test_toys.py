"""The paper's toy-function behaviours as regression tests (Wang, Zhang & Ba 2020, Section 6.1)."""

import math

import pytest
import torch

from l2o.minimax import BilinearGame, create, play, toy


def _run(game, name, steps, **kwargs):
    return play(game, lambda xs, ys: create(name, xs, ys, lr_x=0.05, lr_y=0.05, **kwargs), steps=steps,
                record_every=steps)


def _norm(result):
    return math.hypot(*result.trajectory[-1])


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_f1_ftr_converges_to_the_local_minimax_origin(solver):
    r = _run(toy("f1"), "ftr", 400, solver=solver, damping=0.0)
    assert not r.diverged and _norm(r) < 1e-8


@pytest.mark.parametrize("name", ["gda", "extragradient", "ogda"])
def test_f1_gda_extragradient_ogda_move_away(name):
    r = _run(toy("f1"), name, 150)
    assert _norm(r) > 1e3


def test_f2_ftr_leaves_the_origin_which_is_not_local_minimax_while_gda_converges_to_it():
    ftr = _run(toy("f2"), "ftr", 200, solver="exact", damping=0.0)
    gda = _run(toy("f2"), "gda", 400)
    assert _norm(ftr) > 1e3
    assert _norm(gda) < 1e-8


def test_f3_ftr_converges_to_the_origin_gda_does_not():
    ftr = _run(toy("f3"), "ftr", 700, solver="exact", damping=0.0)
    gda = _run(toy("f3"), "gda", 400)
    assert ftr.final["distance"] < 1e-2
    assert gda.final["distance"] > 1.0


def test_bilinear_extragradient_and_ogda_converge_gda_spirals_out():
    game = BilinearGame(dim=3, seed=0)
    start = play(game, lambda xs, ys: create("gda", xs, ys, lr_x=0.05, lr_y=0.05), steps=0).final["distance"]
    gda = _run(game, "gda", 200)
    eg = _run(game, "extragradient", 200)
    ogda = _run(game, "ogda", 200)
    assert gda.final["distance"] > 1.5 * start
    assert eg.final["distance"] < 0.5 * start
    assert ogda.final["distance"] < 0.5 * start


def test_unknown_toy_is_refused():
    with pytest.raises(ValueError, match="unknown toy"):
        toy("f4")
