"""Stochastic gradient Langevin dynamics (SGLD) and a helper to collect its samples.

Welling & Teh, "Bayesian Learning via Stochastic Gradient Langevin Dynamics" (ICML 2011), with the
constant-step view of Zhang, Liang & Charikar, "A Hitting Time Analysis of Stochastic Gradient
Langevin Dynamics" (COLT 2017). See docs/methods/sgld.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from l2o._compile import CompiledOnce
from l2o.optim import _philox
from l2o.optim._base import (L2OOptimizer, check_foreach, check_nonnegative, check_positive, check_range,
                             group_by_device_and_dtype, new_step_tensor, resolve_foreach, scalar)

NOISE_SOURCES = ("generator", "philox")


class SGLD(L2OOptimizer):
    r"""Langevin dynamics driven by minibatch gradients: a sampler of :math:`p(\theta) \propto e^{-N L(\theta)/T}`.

    With ``loss`` the minibatch *mean* of :math:`-\log p(x_i\mid\theta) - \log p(\theta)/N`
    (so that ``N * loss`` estimates the negative log posterior :math:`U(\theta)`), each step is

    .. math::
        \epsilon_t = a\,(b + t)^{-\gamma},\qquad
        \theta_{t} = \theta_{t-1} - \frac{\epsilon_t}{2}\, N\, \nabla \mathrm{loss}(\theta_{t-1})
                     + \sqrt{\epsilon_t T}\;\xi_t,\quad \xi_t \sim \mathcal N(0, I),

    for ``t = 1, 2, ...``: Welling & Teh's update (their :math:`\epsilon_t/2` drift and
    :math:`\mathcal N(0, \epsilon_t)` noise) with a temperature :math:`T` scaling the noise
    variance. ``lr_decay=0`` (the default) is the constant step of Zhang et al.; Welling & Teh
    decay with :math:`\gamma \in (0.5, 1]`. ``temperature=0`` is plain gradient descent with step
    :math:`\epsilon_t N / 2`.

    Args:
        params: parameters or param groups.
        lr: :math:`a` of the schedule; with ``lr_decay=0`` the constant step size.
        num_data: :math:`N`, the data-set size; the gradient of a minibatch-mean loss is scaled
            by it so that the chain targets the posterior of the whole data set. Use 1 if the loss
            already is the full negative log posterior.
        temperature: :math:`T`; 1 samples the posterior, below 1 sharpens it.
        lr_offset: :math:`b > 0` of the schedule.
        lr_decay: :math:`\gamma \ge 0` of the schedule (0: constant step).
        generator: the ``torch.Generator`` the noise is drawn from (reproducible chains); its
            state is saved in ``state_dict()`` and restored by ``load_state_dict``. ``None`` uses
            torch's global generator. With ``noise="philox"`` it only draws the 64-bit key.
        foreach: multi-tensor path (True), per-tensor loop (False) or the measured default (None).
        noise: ``"generator"`` (default): ``normal_`` from ``generator``. ``"philox"``: the
            counter-based Philox4x32-10 generator, keyed once from ``generator``, with the noise of
            each tensor and step computed inside one compiled pass that also applies the update
            (``torch.compile``, compiled on the first step). Whether it is faster than
            ``normal_`` depends on the CPU: it was on the machine whose runs the docs read as
            AVX-512, and it was about 2x slower on an AVX2-only one (docs/methods/sgld.md,
            ``benchmarks/step_time.py``). Both give exact N(0, 1) noise up to
            24-bit uniforms; they are different streams, so chains differ between the two.
    """

    def __init__(self, params, lr: float = 1e-4, num_data: float = 1.0, temperature: float = 1.0,
                 lr_offset: float = 1.0, lr_decay: float = 0.0, generator: torch.Generator | None = None,
                 foreach: bool | None = None, noise: str = "generator"):
        check_nonnegative("lr", lr)
        check_positive("num_data", num_data)
        check_nonnegative("temperature", temperature)
        check_positive("lr_offset", lr_offset)
        check_range("lr_decay", lr_decay, 0.0, None)
        check_foreach(foreach)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"invalid generator: {generator!r} (expected a torch.Generator or None)")
        if noise not in NOISE_SOURCES:
            raise ValueError(f"invalid noise: {noise!r} (expected one of {', '.join(NOISE_SOURCES)})")
        self.generator = generator
        self.noise = noise
        self._noise_buffers: dict[torch.Tensor, torch.Tensor] = {}
        # Philox key: two 32-bit words, drawn once (saved in state_dict).
        self._philox_key = (torch.randint(0, 2 ** 32, (2,), generator=generator, dtype=torch.int64)
                            if noise == "philox" else None)
        defaults = dict(lr=lr, num_data=float(num_data), temperature=temperature, lr_offset=lr_offset,
                        lr_decay=lr_decay, foreach=foreach)
        super().__init__(params, defaults)

    def state_dict(self):
        state = super().state_dict()
        if self.generator is not None:
            state["generator_state"] = self.generator.get_state()
        if self._philox_key is not None:
            state["philox_key"] = self._philox_key.clone()
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        generator_state = state_dict.pop("generator_state", None)
        philox_key = state_dict.pop("philox_key", None)
        super().load_state_dict(state_dict)
        if generator_state is not None and self.generator is not None:
            self.generator.set_state(generator_state)
        if philox_key is not None and self._philox_key is not None:
            self._philox_key = philox_key.clone().to(torch.int64)
        for state in self.state.values():  # torch.optim casts state tensors to the parameter's dtype
            if "noise_stream" in state:
                state["noise_stream"] = state["noise_stream"].to(torch.int64)

    def _stream_positions(self) -> dict[int, int]:
        """Philox stream of each parameter (by ``id``): its position among all the optimizer's parameters."""
        return {id(q): i for i, q in enumerate(q for g in self.param_groups for q in g["params"])}

    def _step_group(self, group, params, grads):
        if not params:
            return
        steps, streams = [], []
        positions = None
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = new_step_tensor()
            if self.noise == "philox":
                if "noise_stream" not in state:
                    positions = positions or self._stream_positions()
                    state["noise_stream"] = torch.tensor(positions[id(p)], dtype=torch.int64)
                streams.append(state["noise_stream"])
            steps.append(state["step"])
        if self.noise == "philox":
            # One compiled pass per tensor whatever ``foreach`` says: drift, noise and update fused.
            _sgld_philox(params, grads, steps, streams, self._philox_key,
                         lr=group["lr"], num_data=group["num_data"], temperature=group["temperature"],
                         lr_offset=group["lr_offset"], lr_decay=group["lr_decay"])
            return
        # Noise buffers are scratch space, not state: kept out of state_dict.
        noises = []
        for p in params:
            buffer = self._noise_buffers.get(p)
            if buffer is None or buffer.shape != p.shape or buffer.dtype != p.dtype or buffer.device != p.device:
                buffer = self._noise_buffers[p] = torch.empty_like(p, memory_format=torch.contiguous_format)
            noises.append(buffer)
        foreach = resolve_foreach(group["foreach"], params, cpu_default=False)
        (_sgld_foreach if foreach else _sgld_loop)(
            params, grads, steps, noises, lr=group["lr"], num_data=group["num_data"], temperature=group["temperature"],
            lr_offset=group["lr_offset"], lr_decay=group["lr_decay"], generator=self.generator)


def _step_size(lr, lr_offset, lr_decay, step):
    return lr if lr_decay == 0 else lr * (lr_offset + step) ** (-lr_decay)


def _draw_noise(buffer, generator):
    # Filling a kept buffer avoids allocating (and page-faulting) a parameter-sized tensor per step.
    return buffer.normal_(generator=generator)


def _sgld_loop(params, grads, steps, noises, *, lr, num_data, temperature, lr_offset, lr_decay, generator):
    for param, grad, step_t, noise in zip(params, grads, steps, noises):
        step_t += 1
        eps = _step_size(lr, lr_offset, lr_decay, scalar(step_t))
        param.add_(grad, alpha=-0.5 * eps * num_data)
        if temperature > 0:
            param.add_(_draw_noise(noise, generator), alpha=math.sqrt(eps * temperature))


def _sgld_foreach(params, grads, steps, noises, *, lr, num_data, temperature, lr_offset, lr_decay, generator):
    # Noise is drawn tensor by tensor in parameter order, exactly as the loop draws it, so both
    # paths give the same chain for the same generator state.
    if temperature > 0:
        for noise in noises:
            _draw_noise(noise, generator)
    for p_list, g_list, s_list, n_list in group_by_device_and_dtype(params, grads, steps, noises):
        torch._foreach_add_(s_list, 1.0)
        step_sizes = [_step_size(lr, lr_offset, lr_decay, scalar(s)) for s in s_list]
        torch._foreach_add_(p_list, torch._foreach_mul(g_list, [-0.5 * e * num_data for e in step_sizes]))
        if temperature > 0:
            torch._foreach_mul_(n_list, [math.sqrt(e * temperature) for e in step_sizes])
            torch._foreach_add_(p_list, n_list)


#: ``_philox.langevin_update_`` compiled once for all shapes; where compiling fails, the eager
#: function (correct but slow: the generator's rounds are separate tensor operations).
_fused_langevin_ = CompiledOnce(_philox.langevin_update_, "SGLD(noise='philox')")


_counters: dict[torch.device, torch.Tensor] = {}


def _counter(numel: int, device: torch.device) -> torch.Tensor:
    """A :func:`_philox.block_counter` for ``numel`` numbers on ``device``, kept and grown."""
    counter = _counters.get(device)
    if counter is None or counter.numel() < (numel + 3) // 4:
        counter = _counters[device] = _philox.block_counter(max(numel, 4096), device)
    return counter


def _sgld_philox(params, grads, steps, streams, key, *, lr, num_data, temperature, lr_offset, lr_decay):
    scalars = {}  # (step, dtype, device) -> the update's 0-dim arguments, made once per step count
    for param, grad, step_t, stream in zip(params, grads, steps, streams):
        step_t += 1
        step = scalar(step_t)
        eps = _step_size(lr, lr_offset, lr_decay, step)
        if temperature == 0:
            param.add_(grad, alpha=-0.5 * eps * num_data)
            continue
        work = _philox.working_dtype(param.dtype)
        shared = scalars.get((step, work, param.device))
        if shared is None:
            shared = scalars[(step, work, param.device)] = (
                torch.tensor(-0.5 * eps * num_data, dtype=work, device=param.device),
                torch.tensor(math.sqrt(eps * temperature), dtype=work, device=param.device),
                torch.tensor(int(step), device=param.device), key.to(param.device))
        drift, scale, step_i, key_d = shared
        args = (param, grad, drift, scale, stream.to(param.device), step_i, key_d, _counter(param.numel(), param.device))
        if not _fused_langevin_(*args):  # compiling failed, or inside the caller's compiled step
            _philox.langevin_update_(*args)


class SampleCollector:
    """Keeps copies of the parameters after burn-in, every ``thin``-th call.

    Call it after each optimizer step (``collector(params)``); it also fits
    ``l2o.train.train(..., params_hook=collector)``, which calls ``collector(step, params)``.

    Args:
        burn_in: number of initial calls whose parameters are discarded.
        thin: keep one call out of ``thin`` after burn-in.
        max_samples: stop keeping samples after this many (None: no limit).
    """

    def __init__(self, burn_in: int = 0, thin: int = 1, max_samples: int | None = None):
        if isinstance(burn_in, bool) or not isinstance(burn_in, int) or burn_in < 0:
            raise ValueError(f"invalid burn_in: {burn_in!r} (expected an integer >= 0)")
        if isinstance(thin, bool) or not isinstance(thin, int) or thin < 1:
            raise ValueError(f"invalid thin: {thin!r} (expected an integer >= 1)")
        if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
            raise ValueError(f"invalid max_samples: {max_samples!r} (expected None or an integer >= 1)")
        self.burn_in, self.thin, self.max_samples = burn_in, thin, max_samples
        self.calls = 0
        self.samples: list[list[torch.Tensor]] = []

    def __call__(self, *args) -> None:
        params = args[-1]
        self.calls += 1
        after = self.calls - self.burn_in
        if after <= 0 or after % self.thin != 0:
            return
        if self.max_samples is not None and len(self.samples) >= self.max_samples:
            return
        self.samples.append([p.detach().clone() for p in params])

    def stacked(self) -> list[torch.Tensor]:
        """One tensor per parameter, of shape ``(num_samples, *param.shape)``."""
        if not self.samples:
            raise ValueError("no samples collected yet (burn-in not over?)")
        return [torch.stack(column) for column in zip(*self.samples)]

    def flat(self) -> torch.Tensor:
        """All parameters of each sample concatenated: shape ``(num_samples, total_size)``."""
        return torch.cat([s.reshape(len(self.samples), -1) for s in self.stacked()], dim=1)


def collect_samples(optimizer: torch.optim.Optimizer, closure: Callable[[], torch.Tensor], num_steps: int,
                    burn_in: int = 0, thin: int = 1, params: Iterable[torch.Tensor] | None = None,
                    progress: bool = False) -> torch.Tensor:
    """Run ``num_steps`` steps of ``optimizer.step(closure)`` and return the kept samples.

    Args:
        optimizer: usually an :class:`SGLD`.
        closure: zeroes the gradients, computes the loss, calls ``backward`` and returns the loss.
        num_steps: total number of steps, burn-in included.
        burn_in, thin: see :class:`SampleCollector`.
        params: the tensors to record (default: every parameter of the optimizer).
        progress: show a progress bar on stderr.

    Returns:
        A ``(num_samples, total_size)`` tensor of flattened parameters.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps <= burn_in:
        raise ValueError(f"invalid num_steps: {num_steps!r} (expected an integer > burn_in={burn_in})")
    tracked = list(params) if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
    collector = SampleCollector(burn_in=burn_in, thin=thin)
    steps = range(num_steps)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="sgld", unit="step")
    for _ in steps:
        optimizer.step(closure)
        collector(tracked)
    return collector.flat()
