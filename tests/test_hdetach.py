"""HDetachLSTM: equals nn.LSTM at p = 0, blocks exactly the h-path when it detaches."""

import pytest
import torch
from torch import nn

from l2o.nn import HDetachLSTM


def _pair(layers=1, batch_first=False, bias=True, seed=0):
    torch.manual_seed(seed)
    ref = nn.LSTM(3, 5, num_layers=layers, batch_first=batch_first, bias=bias).double()
    ours = HDetachLSTM(3, 5, num_layers=layers, batch_first=batch_first, bias=bias, detach_prob=0.0).double()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _grads(module, x, hx):
    module.zero_grad()
    out, (h, c) = module(x, hx)
    loss = (out.sin() * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum() + (h ** 2).sum() + c.sum()
    loss.backward()
    return out.detach(), {k: p.grad.clone() for k, p in module.named_parameters()}


@pytest.mark.parametrize("layers,batch_first,bias", [(1, False, True), (2, True, True), (2, False, False)])
def test_p0_matches_nn_lstm_outputs_and_gradients(layers, batch_first, bias):
    ref, ours = _pair(layers, batch_first, bias)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)  # (B, T) or (T, B)
    batch = 4 if batch_first else 7
    hx = (torch.randn(layers, batch, 5, generator=g, dtype=torch.float64),
          torch.randn(layers, batch, 5, generator=g, dtype=torch.float64))
    out_ref, grads_ref = _grads(ref, x, hx)
    out_ours, grads_ours = _grads(ours, x, hx)
    torch.testing.assert_close(out_ours, out_ref, rtol=0, atol=1e-12)
    assert grads_ref.keys() == grads_ours.keys()
    for name in grads_ref:
        torch.testing.assert_close(grads_ours[name], grads_ref[name], rtol=0, atol=1e-12, msg=name)


def test_detach_at_step_t_equals_splitting_nn_lstm_with_detached_h():
    """Detaching at step t == running nn.LSTM to t-1, then on from (h.detach(), c)."""
    ref, ours = _pair()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(9, 2, 3, generator=g, dtype=torch.float64)
    t = 4
    ref.zero_grad()
    first, (h, c) = ref(x[:t])
    second, _ = ref(x[t:], (h.detach(), c))
    loss_ref = (torch.cat([first, second]) ** 3).sum()
    loss_ref.backward()
    grads_ref = {k: p.grad.clone() for k, p in ref.named_parameters()}

    ours.zero_grad()
    mask = torch.zeros(1, 9, dtype=torch.bool)
    mask[0, t] = True
    out, _ = ours(x, detach_masks=mask)
    (out ** 3).sum().backward()
    for name, grad in ours.named_parameters():
        torch.testing.assert_close(grad.grad, grads_ref[name], rtol=0, atol=1e-12, msg=name)
    # and it really differs from the undetached gradient
    ref.zero_grad()
    (ref(x)[0] ** 3).sum().backward()
    assert not torch.allclose(ref.weight_hh_l0.grad, ours.weight_hh_l0.grad)


def test_cell_path_always_flows_h_path_blocked():
    ours = HDetachLSTM(3, 4, detach_prob=1.0).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    h0 = torch.randn(1, 2, 4, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, 2, 4, dtype=torch.float64, requires_grad=True)
    out, _ = ours(x, (h0, c0))
    out[-1].sum().backward()
    assert h0.grad is None  # h0 reaches the output only through the h-path: no gradient
    assert torch.count_nonzero(c0.grad) > 0  # the cell-state path is never cut
    ours.detach_prob = 0.0
    ours(x, (h0, c0))[0][-1].sum().backward()
    assert torch.count_nonzero(h0.grad) > 0
    # forward values are untouched by detaching
    ours.detach_prob = 1.0
    ours.eval()
    out_eval, _ = ours(x, (h0, c0))
    torch.testing.assert_close(out_eval, out.detach(), rtol=0, atol=0)


def test_detach_frequency_matches_probability_and_eval_never_detaches():
    lstm = HDetachLSTM(2, 3, detach_prob=0.3, generator=torch.Generator().manual_seed(0))
    masks = lstm.sample_detach_masks(20000)
    assert masks.shape == (1, 20000)
    assert abs(masks.float().mean().item() - 0.3) < 0.015
    lstm.eval()
    assert not lstm.sample_detach_masks(100).any()


def test_unbatched_input_and_state_dict_interop():
    ref, ours = _pair()
    x = torch.randn(5, 3, dtype=torch.float64)
    out_ref, (h_ref, c_ref) = ref(x)
    out, (h, c) = ours(x)
    assert out.shape == (5, 5) and h.shape == (1, 5)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(c, c_ref)
    back = nn.LSTM(3, 5).double()
    back.load_state_dict(ours.state_dict())


@pytest.mark.parametrize("kwargs,word", [({"detach_prob": 1.5}, "detach_prob"), ({"bidirectional": True}, "bidirectional"),
                                         ({"proj_size": 2}, "proj_size"), ({"num_layers": 0}, "num_layers")])
def test_bad_arguments_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        HDetachLSTM(3, 4, **kwargs)
