"""YellowFin: momentum SGD whose learning rate and momentum tune themselves.

Zhang and Mitliagkas, "YellowFin and the Art of Momentum Tuning" (MLSys 2019, arXiv:1706.03471).
See docs/methods/yellowfin.md for the equations, defaults, deviations and the experiments.
"""

from __future__ import annotations

import math
import warnings

import torch

from l2o.optim._base import (L2OOptimizer, check_bool, check_foreach, check_nonnegative, check_positive,
                             check_range, group_by_device_and_dtype, resolve_foreach, warn_nonfinite_skip)

_TINY = 1e-30  # below any meaningful squared gradient norm in float32 or float64


def cubic_root(p: float) -> float:
    """The root x in [0, 1] of ``p x = (1 - x)^3`` (the stationarity condition of SingleStep).

    With ``x = sqrt(mu)``, minimising ``mu D^2 + alpha^2 C`` with ``alpha = (1 - sqrt(mu))^2 / h_min``
    gives ``x D^2 h_min^2 / (2C) = (1 - x)^3``, i.e. this equation with ``p = D^2 h_min^2 / (2C)``.
    Its left side minus its right side increases strictly on [0, 1], from -1 to p, so the root
    is unique. Vieta's substitution gives it in closed form, but that form cancels
    catastrophically for large ``p`` (and overflows); bracketed Newton steps on a well-scaled
    residual then make the root accurate to rounding for every ``p``.
    """
    if not p > 0.0:  # p = 0 (or NaN): zero distance or zero curvature, the root is x = 1
        return 1.0
    if math.isinf(p):  # no gradient variance: x -> 0
        return 0.0
    if p >= 1.0:  # residual x - (1 - x)^3 / p: slope between 1 and 1 + 3/p
        def residual(x):
            return x - (1.0 - x) ** 3 / p

        def slope(x):
            return 1.0 + 3.0 * (1.0 - x) ** 2 / p

        x = 1.0 / (p + 3.0)
    else:
        def residual(x):
            return p * x - (1.0 - x) ** 3

        def slope(x):
            return p + 3.0 * (1.0 - x) ** 2

        # y = x - 1 solves y^3 + p y + p = 0; Vieta: y = w - p / (3 w), w^3 = -(p + sqrt(p^2 + 4 p^3 / 27)) / 2.
        w = -((0.5 * p * (1.0 + math.sqrt(1.0 + 4.0 * p / 27.0))) ** (1.0 / 3.0))
        x = min(max(1.0 + w - p / (3.0 * w), 0.0), 1.0)
    low, high = 0.0, 1.0
    for _ in range(200):
        r = residual(x)
        if r == 0.0:
            return x
        if r > 0.0:
            high = x
        else:
            low = x
        next_x = x - r / slope(x)
        if not low <= next_x <= high:
            next_x = 0.5 * (low + high)
        if abs(next_x - x) <= 1e-15 * abs(next_x) or next_x in (low, high) and high - low <= 1e-15 * high:
            return next_x
        x = next_x
    return x


def single_step(h_min: float, h_max: float, variance: float, distance: float) -> tuple[float, float] | None:
    """YellowFin's SingleStep tuner: the momentum and learning rate for the measured statistics.

    Solves ``min_{mu, alpha} mu D^2 + alpha^2 C`` subject to
    ``sqrt(mu) >= (sqrt(h_max/h_min) - 1) / (sqrt(h_max/h_min) + 1)`` and
    ``alpha = (1 - sqrt(mu))^2 / h_min``.

    Returns:
        ``(mu, alpha)``, or None when the statistics cannot define a step (non-finite values,
        or zero curvature); the caller then keeps its previous values.
    """
    values = (h_min, h_max, variance, distance)
    if not all(math.isfinite(v) for v in values) or h_min <= _TINY:
        return None
    dynamic_range = max(h_max / h_min, 1.0)
    root = math.sqrt(dynamic_range)
    mu_floor = ((root - 1.0) / (root + 1.0)) ** 2
    p = distance ** 2 * h_min ** 2 / (2.0 * variance) if variance > 0.0 else math.inf
    x = cubic_root(p)
    mu = max(x * x, mu_floor)
    alpha = (1.0 - math.sqrt(mu)) ** 2 / h_min
    if not (math.isfinite(mu) and math.isfinite(alpha)):
        return None
    return mu, alpha


class YellowFin(L2OOptimizer):
    r"""Momentum SGD with the learning rate and momentum tuned every step (YellowFin).

    Each step, for each param group (one tuner per group; with one group this is the paper's
    single global tuner), with :math:`g_t` the gradient and :math:`h_t = \|g_t\|^2`:

    .. math::
        h_{\max} &\leftarrow \beta h_{\max} + (1-\beta)\max_{t-w<i\le t} h_i,\qquad
        h_{\min} \leftarrow \beta h_{\min} + (1-\beta)\min_{t-w<i\le t} h_i
        \quad(\text{of }\log h\text{ by default}) \\
        C &= \overline{\|g\|^2} - \|\bar g\|^2 \quad(\bar g,\ \overline{\|g\|^2}\text{ moving averages}) \\
        D &\leftarrow \beta D + (1-\beta)\,\overline{\|g\|}/\overline{h} \\
        \mu^*, \alpha^* &= \mathrm{SingleStep}(C, D, h_{\min}, h_{\max}),\quad
        \alpha^* \leftarrow \alpha^* \min(1, t / (10 w)) \quad(\text{slow start}) \\
        x_{t+1} &= x_t + \mu^* (x_t - x_{t-1}) - \eta\,\alpha^* g_t

    The statistics are zero-debiased moving averages (divided by :math:`1-\beta^t`). By default
    the optimizer does what the authors' code does with its defaults, which is what the paper's
    experiments ran (see docs/methods/yellowfin.md): the values tuned at each step are applied
    as they are (``smoothed=False``), the curvature range is averaged in the log domain, the
    tuned step warms up over ``10 w`` steps, the first step applies ``init_lr`` and
    ``init_momentum`` untuned, the gradient the update uses is clipped to
    :math:`\sqrt{h_{\max}}` and the one the statistics see to :math:`10\sqrt{h_{\max}}`, and one
    step never moves farther than ``max_move`` (:math:`\eta\alpha\|g\| \le 100`).
    :attr:`ALGORITHM_LISTING` turns all of that off: the paper's Algorithm 1 as printed, with
    the :math:`\beta`-smoothed :math:`\mu \leftarrow \beta\mu + (1-\beta)\mu^*`,
    :math:`\alpha \leftarrow \beta\alpha + (1-\beta)\alpha^*` applied (started at ``init_lr``,
    ``init_momentum``; not zero-debiased). :math:`\eta` is the group's ``lr``, a multiplier on
    the tuned step (1 by default) that learning-rate schedulers can drive.

    **Closed loop** (``closed_loop=True``, for asynchronous training whose gradients are
    ``staleness`` steps old): the optimizer measures the *total* momentum from the parameter
    trajectory, as the median over coordinates of
    :math:`(x_{s+1}-x_s+\eta\alpha_s g(x_s)) / (x_s-x_{s-1})` where :math:`g(x_s)` is the
    gradient just received (computed at :math:`x_s`, :math:`s = t-\tau`), and corrects the
    momentum it applies by negative feedback,
    :math:`\mu_{alg} \leftarrow \mu_{alg} + \gamma(\mu - \hat\mu_T)`, so that the total momentum
    tracks the tuned target. It keeps ``staleness + 2`` past displacements per parameter.

    ``torch.compile(optimizer.step)`` runs the step eagerly (one warning, no recompiling): the tuner
    is scalar arithmetic on the host with data-dependent branches, which would break the graph
    and recompile on every new tuned value (benchmarks/yellowfin_compile.py measures both).

    Args:
        params: parameters or param groups.
        lr: multiplier :math:`\eta` on the tuned learning rate (the authors' ``lr_factor``, 1.0).
        beta: smoothing of every moving average (0.999 in the paper).
        curv_win_width: window :math:`w` of the curvature range (20 in the paper).
        init_lr: initial learning rate :math:`\alpha_0` (1e-4, the authors' default): applied on the
            first step unless ``tune_first_step``, and the start of the smoothed :math:`\alpha`.
        init_momentum: initial momentum :math:`\mu_0` (0, as the paper).
        smoothed: apply the :math:`\beta`-smoothed :math:`\mu, \alpha` (the paper's listing) instead
            of the values tuned at this step (the authors' code; default).
        log_curvature: average :math:`\log h_{\min}` and :math:`\log h_{\max}` (the authors' code;
            default) instead of :math:`h_{\min}, h_{\max}` (the paper's listing).
        slow_start: multiply :math:`\alpha^*` by :math:`\min(1, t/(10w))` (the authors' code).
        tune_first_step: tune and apply on the first step too (the first step is then
            :math:`1/\|g_1\|` long); off by default, as in the authors' code, where the first step
            applies ``init_lr`` and ``init_momentum``.
        max_move: cap on the length :math:`\eta\alpha\|g\|` of a step's gradient term (the
            PyTorch code's ``catastrophic_move_thresh``, 100); None for no cap.
        adaptive_clip: factor k: from the second step, the gradient the update uses is clipped to
            norm :math:`k\sqrt{h_{\max}}` (the previous step's :math:`h_{\max}`; the authors' adaptive
            clipping, k = 1); None for none.
        stat_clip: factor s: from the second step, the gradient is first clipped to
            :math:`s\sqrt{h_{\max}}` before the statistics see it (the authors' "stat protection",
            s = 10); None for none.
        clip_norm: if set, clip each step's gradient to this global norm (per group) before
            anything else sees it.
        weight_decay: L2 penalty added to the gradient.
        closed_loop: measure the total momentum and correct the applied momentum.
        staleness: age in steps of the gradients the optimizer receives (closed loop only).
        feedback_gain: gain :math:`\gamma` of the momentum feedback (0.01 in the paper).
        foreach: multi-tensor path (True), per-tensor loop (False) or the measured default (None).
    """

    #: The paper's Algorithm 1 as printed: smoothed values applied, linear curvature averages,
    #: no warm-up, tuned from the first step, no clipping and no step cap.
    ALGORITHM_LISTING = dict(smoothed=True, log_curvature=False, slow_start=False, tune_first_step=True,
                             max_move=None, adaptive_clip=None, stat_clip=None)

    def __init__(self, params, lr: float = 1.0, beta: float = 0.999, curv_win_width: int = 20,
                 init_lr: float = 1e-4, init_momentum: float = 0.0, smoothed: bool = False,
                 log_curvature: bool = True, slow_start: bool = True, tune_first_step: bool = False,
                 max_move: float | None = 100.0, adaptive_clip: float | None = 1.0, stat_clip: float | None = 10.0,
                 clip_norm: float | None = None, weight_decay: float = 0.0, closed_loop: bool = False,
                 staleness: int = 0, feedback_gain: float = 0.01, foreach: bool | None = None):
        check_nonnegative("lr", lr)
        check_range("beta", beta, 0.0, 1.0, high_open=True)
        if isinstance(curv_win_width, bool) or not isinstance(curv_win_width, int) or curv_win_width < 1:
            raise ValueError(f"invalid curv_win_width: {curv_win_width!r} (expected an integer >= 1)")
        check_positive("init_lr", init_lr)
        check_range("init_momentum", init_momentum, 0.0, 1.0, high_open=True)
        for name, value in (("smoothed", smoothed), ("log_curvature", log_curvature), ("slow_start", slow_start),
                            ("tune_first_step", tune_first_step), ("closed_loop", closed_loop)):
            check_bool(name, value)
        for name, value in (("max_move", max_move), ("adaptive_clip", adaptive_clip), ("stat_clip", stat_clip),
                            ("clip_norm", clip_norm)):
            if value is not None:
                check_positive(name, value)
        check_nonnegative("weight_decay", weight_decay)
        if isinstance(staleness, bool) or not isinstance(staleness, int) or staleness < 0:
            raise ValueError(f"invalid staleness: {staleness!r} (expected an integer >= 0)")
        check_range("feedback_gain", feedback_gain, 0.0, 1.0)
        check_foreach(foreach)
        defaults = dict(lr=lr, beta=beta, curv_win_width=curv_win_width, init_lr=init_lr,
                        init_momentum=init_momentum, smoothed=smoothed, log_curvature=log_curvature,
                        slow_start=slow_start, tune_first_step=tune_first_step, max_move=max_move,
                        adaptive_clip=adaptive_clip, stat_clip=stat_clip, clip_norm=clip_norm,
                        weight_decay=weight_decay, closed_loop=closed_loop, staleness=staleness,
                        feedback_gain=feedback_gain, foreach=foreach)
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Perform one optimisation step (always eagerly; see the class docstring on compiling).

        Args:
            closure: re-evaluates the model and returns the loss (called with gradients enabled).

        Returns:
            The closure's loss, or None.
        """
        # While torch.compile traces this frame, is_compiling() is True and the call below runs
        # eagerly: no graph breaks inside the tuner, and nothing to recompile on.
        return self._eager_step(closure, torch.compiler.is_compiling())

    @torch.compiler.disable
    def _eager_step(self, closure, compiling: bool):
        if compiling and not getattr(self, "_warned_compile", False):
            self._warned_compile = True
            warnings.warn("YellowFin.step is not compiled: its tuner is scalar host arithmetic with data-dependent "
                          "branches, which would break the graph and recompile on every new tuned value; the step "
                          "runs eagerly", UserWarning, stacklevel=3)
        return L2OOptimizer.step(self, closure)

    def _step_number(self, work) -> int | None:
        groups = [group for group, params, _ in work if params]
        return self._tuner(groups[0])["yf_step"] + 1 if groups else None

    # -- tuner state: plain Python numbers kept in the state of the group's first parameter, so
    # -- state_dict round trips (and weights_only loading) need nothing special.

    def _tuner(self, group: dict) -> dict:
        state = self.state[group["params"][0]]
        if "yf_step" not in state:
            lr0, mu0 = float(group["init_lr"]), float(group["init_momentum"])
            state.update(yf_step=0, yf_window=[], yf_h_max=0.0, yf_h_min=0.0, yf_sq_norm=0.0, yf_norm=0.0,
                         yf_dist=0.0, yf_lr=lr0, yf_momentum=mu0, yf_lr_t=lr0, yf_momentum_t=mu0,
                         yf_applied_lr=lr0, yf_applied_momentum=mu0, yf_momentum_target=mu0, yf_step_size=0.0,
                         yf_total_momentum=float("nan"), yf_variance=0.0, yf_h_min_debiased=0.0,
                         yf_h_max_debiased=0.0, yf_distance=0.0, yf_step_sizes=[])
        return state

    def tuner_state(self, group_index: int = 0) -> dict[str, float]:
        """The tuner's current numbers for a param group (for logging and plots).

        Keys: ``lr`` (the :math:`\\alpha` the last update used, before the ``lr`` multiplier and
        the ``max_move`` cap: tuned or smoothed as ``smoothed`` says), ``momentum`` (the tuned
        target :math:`\\mu`, likewise), ``applied_momentum`` (what the update uses; equals
        ``momentum`` in open loop), ``step_size`` (:math:`\\eta\\alpha` after the cap),
        ``tuned_lr``/``tuned_momentum`` (this step's :math:`\\alpha^*, \\mu^*`),
        ``smoothed_lr``/``smoothed_momentum``, ``total_momentum`` (measured, closed loop only,
        else NaN), ``h_min``, ``h_max``, ``variance``, ``distance``, ``step``.
        """
        state = self._tuner(self.param_groups[group_index])
        return {"lr": state["yf_applied_lr"], "momentum": state["yf_momentum_target"],
                "applied_momentum": state["yf_applied_momentum"], "step_size": state["yf_step_size"],
                "tuned_lr": state["yf_lr_t"], "tuned_momentum": state["yf_momentum_t"],
                "smoothed_lr": state["yf_lr"], "smoothed_momentum": state["yf_momentum"],
                "total_momentum": state["yf_total_momentum"], "h_min": state["yf_h_min_debiased"],
                "h_max": state["yf_h_max_debiased"], "variance": state["yf_variance"],
                "distance": state["yf_distance"], "step": state["yf_step"]}

    def _step_group(self, group, params, grads):
        if not params:
            return
        # Measured on CPU: the multi-tensor path was faster in every run (benchmarks/step_time.py).
        foreach = resolve_foreach(group["foreach"], params, cpu_default=True)
        tuner = self._tuner(group)
        first = tuner["yf_step"] == 0
        h_max_before = tuner["yf_h_max_debiased"]
        if group["weight_decay"] != 0:
            if foreach:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            else:
                grads = [g.add(p, alpha=group["weight_decay"]) for g, p in zip(grads, params)]
        sq_norm = _sq_norm(grads, foreach)
        threshold = math.inf
        if group["clip_norm"] is not None:
            threshold = group["clip_norm"]
        if group["stat_clip"] is not None and not first:
            threshold = min(threshold, group["stat_clip"] * math.sqrt(h_max_before))
        grads, sq_norm = _clip(grads, sq_norm, threshold, foreach)
        if not math.isfinite(sq_norm):  # finite entries whose squares overflow: nothing to tune on
            warn_nonfinite_skip("YellowFin", tuner["yf_step"] + 1)
            return

        buffers = []
        for p in params:
            state = self.state[p]
            if "grad_avg" not in state:
                state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            buffers.append(state["momentum_buffer"])
        if sq_norm > 0.0:  # an exactly zero gradient says nothing about curvature, variance or distance
            grad_avgs = [self.state[p]["grad_avg"] for p in params]
            beta = group["beta"]
            if foreach:
                for g_list, a_list in group_by_device_and_dtype(grads, grad_avgs):
                    torch._foreach_lerp_(a_list, g_list, 1.0 - beta)
            else:
                for g, a in zip(grads, grad_avgs):
                    a.lerp_(g, 1.0 - beta)
            self._update_tuner(group, tuner, sq_norm, _sq_norm(grad_avgs, foreach))

        lr = tuner["yf_applied_lr"]
        step_size = group["lr"] * lr
        if group["max_move"] is not None and step_size * math.sqrt(sq_norm) > group["max_move"]:
            step_size = group["max_move"] / math.sqrt(sq_norm)
        tuner["yf_step_size"] = step_size
        # The adaptive clip scales only what the update adds, so it is folded into the update's
        # coefficient instead of writing a scaled copy of the gradients (and measuring its norm):
        # with the default k = 1 it binds whenever |g|^2 exceeds the smoothed maximum curvature.
        update_scale = 1.0
        if group["adaptive_clip"] is not None and not first:
            clip_to = group["adaptive_clip"] * math.sqrt(h_max_before)
            if sq_norm > clip_to ** 2:
                update_scale = clip_to / math.sqrt(sq_norm)
        momentum = tuner["yf_applied_momentum"]
        closed = group["closed_loop"]
        if closed and update_scale != 1.0:  # the closed loop's measurement reads the clipped gradient
            grads = torch._foreach_mul(grads, update_scale) if foreach else [g * update_scale for g in grads]
            update_scale = 1.0
        before = [p.clone() for p in params] if closed else None
        # Heavy ball: v <- mu v - eta alpha g; x <- x + v  (x_{t+1} = x_t + mu (x_t - x_{t-1}) - eta alpha g_t).
        if foreach:
            for p_list, g_list, b_list in group_by_device_and_dtype(params, grads, buffers):
                torch._foreach_mul_(b_list, momentum)
                torch._foreach_add_(b_list, g_list, alpha=-step_size * update_scale)
                torch._foreach_add_(p_list, b_list)
        else:
            for p, g, b in zip(params, grads, buffers):
                b.mul_(momentum).add_(g, alpha=-step_size * update_scale)
                p.add_(b)
        if closed:
            self._close_loop(group, tuner, params, grads, before, step_size)

    def _update_tuner(self, group: dict, tuner: dict, sq_norm: float, grad_avg_sq_norm: float) -> None:
        beta = group["beta"]
        tuner["yf_step"] += 1
        step = tuner["yf_step"]
        debias = 1.0 - beta ** step
        window = tuner["yf_window"]
        window.append(sq_norm)
        del window[: -group["curv_win_width"]]
        high, low = max(window), min(window)
        if group["log_curvature"]:
            high, low = math.log(high), math.log(low)
        tuner["yf_h_max"] = beta * tuner["yf_h_max"] + (1.0 - beta) * high
        tuner["yf_h_min"] = beta * tuner["yf_h_min"] + (1.0 - beta) * low
        tuner["yf_sq_norm"] = beta * tuner["yf_sq_norm"] + (1.0 - beta) * sq_norm
        tuner["yf_norm"] = beta * tuner["yf_norm"] + (1.0 - beta) * math.sqrt(sq_norm)
        # Both averages carry the same bias factor, which cancels in the ratio.
        tuner["yf_dist"] = beta * tuner["yf_dist"] + (1.0 - beta) * tuner["yf_norm"] / tuner["yf_sq_norm"]
        h_max, h_min = tuner["yf_h_max"] / debias, tuner["yf_h_min"] / debias
        if group["log_curvature"]:
            h_max, h_min = math.exp(h_max), math.exp(h_min)
        # C = sum(avg(g^2) - avg(g)^2); rounding can make it slightly negative.
        variance = max(tuner["yf_sq_norm"] / debias - grad_avg_sq_norm / debias ** 2, 0.0)
        distance = tuner["yf_dist"] / debias
        tuner.update(yf_h_min_debiased=h_min, yf_h_max_debiased=h_max, yf_variance=variance, yf_distance=distance)
        if step > 1 or group["tune_first_step"]:
            tuned = self._tune(h_min, h_max, variance, distance)
            if tuned is not None:
                mu_star, alpha_star = tuned
                if group["slow_start"]:
                    alpha_star *= min(1.0, step / (10.0 * group["curv_win_width"]))
                tuner["yf_momentum_t"], tuner["yf_lr_t"] = mu_star, alpha_star
            tuner["yf_momentum"] = beta * tuner["yf_momentum"] + (1.0 - beta) * tuner["yf_momentum_t"]
            tuner["yf_lr"] = beta * tuner["yf_lr"] + (1.0 - beta) * tuner["yf_lr_t"]
        smoothed = group["smoothed"]
        target = tuner["yf_momentum"] if smoothed else tuner["yf_momentum_t"]
        tuner["yf_momentum_target"] = target
        tuner["yf_applied_lr"] = tuner["yf_lr"] if smoothed else tuner["yf_lr_t"]
        if not group["closed_loop"]:
            tuner["yf_applied_momentum"] = target

    def _tune(self, h_min: float, h_max: float, variance: float, distance: float) -> tuple[float, float] | None:
        """SingleStep on the measured statistics (a method so that experiments can substitute
        measurements, e.g. the true curvature range, and see what each one does)."""
        return single_step(h_min, h_max, variance, distance)

    def _close_loop(self, group, tuner, params, grads, before, step_size) -> None:
        """Measure the total momentum from the trajectory and correct the applied momentum."""
        staleness = group["staleness"]
        history = staleness + 2
        sizes = tuner["yf_step_sizes"]
        sizes.append(step_size)
        del sizes[:-(staleness + 1)]
        index = (tuner["yf_step"] - 1) % history  # slot of this step's displacement
        for p, old in zip(params, before):
            state = self.state[p]
            if "displacements" not in state:
                state["displacements"] = torch.zeros((history, *p.shape), dtype=p.dtype, device=p.device)
            state["displacements"][index].copy_(p - old)
        if tuner["yf_step"] < staleness + 2:
            return  # need x_{s+1} - x_s and x_s - x_{s-1} for s = t - staleness
        slot_s = (tuner["yf_step"] - 1 - staleness) % history
        slot_prev = (tuner["yf_step"] - 2 - staleness) % history
        alpha_s = sizes[0]  # the step size in force when x_{s+1} - x_s was taken
        displacement = torch.cat([self.state[p]["displacements"][slot_s].reshape(-1) for p in params])
        previous = torch.cat([self.state[p]["displacements"][slot_prev].reshape(-1) for p in params])
        total = measure_total_momentum(displacement, previous, torch.cat([g.reshape(-1) for g in grads]), alpha_s)
        if total is None:
            return
        tuner["yf_total_momentum"] = total
        corrected = tuner["yf_applied_momentum"] + group["feedback_gain"] * (tuner["yf_momentum_target"] - total)
        # Keep the applied momentum where the heavy-ball update is defined and stable.
        tuner["yf_applied_momentum"] = min(max(corrected, -0.999), 0.999)


def measure_total_momentum(displacement: torch.Tensor, previous_displacement: torch.Tensor, grad: torch.Tensor,
                           step_size: float) -> float | None:
    """The total momentum seen in a trajectory (YellowFin's closed-loop measurement).

    Fits ``x_{s+1} - x_s = mu_T (x_s - x_{s-1}) - step_size * grad(x_s)`` coordinatewise and
    returns the median of ``(x_{s+1} - x_s + step_size * grad(x_s)) / (x_s - x_{s-1})`` over the
    coordinates whose previous displacement is not zero; None if there is none (or the median
    is not finite). With fresh gradients it returns the applied momentum; with gradients that
    are ``tau`` steps old it also sees the momentum that the staleness adds.

    Args:
        displacement: ``x_{s+1} - x_s``, flattened.
        previous_displacement: ``x_s - x_{s-1}``, flattened.
        grad: the gradient evaluated at ``x_s``, flattened.
        step_size: the learning rate in force at step ``s``.
    """
    usable = previous_displacement.abs() > torch.finfo(previous_displacement.dtype).tiny
    if not bool(usable.any()):
        return None
    ratios = (displacement[usable] + step_size * grad[usable]) / previous_displacement[usable]
    total = float(torch.median(ratios))
    return total if math.isfinite(total) else None


def _clip(grads: list[torch.Tensor], sq_norm: float, threshold: float, foreach: bool):
    """Scale ``grads`` (of squared norm ``sq_norm``) down to norm ``threshold`` if above it."""
    if not sq_norm > threshold ** 2:
        return grads, sq_norm
    scale = threshold / math.sqrt(sq_norm)
    grads = torch._foreach_mul(grads, scale) if foreach else [g * scale for g in grads]
    return grads, _sq_norm(grads, foreach)


def _sq_norm(tensors: list[torch.Tensor], foreach: bool) -> float:
    """Sum of squares of all entries, as a Python float (accumulated in float64)."""
    if foreach:
        total = 0.0
        for (bucket,) in group_by_device_and_dtype(tensors):
            norms = torch._foreach_norm(bucket)
            total += float(torch.stack(norms).double().pow(2).sum())
        return total
    return sum(float(torch.linalg.vector_norm(t).double() ** 2) for t in tensors)
