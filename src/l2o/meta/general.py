"""Batched meta-training of a learned rule on a task family, by truncated BPTT, ES or PES.

:class:`GeneralTrainer` keeps ``groups`` episodes in flight, each a batch of ``batch_size``
task instances that share an architecture (:mod:`l2o.meta.batched`). Every outer step takes
the next group in turn, advances it by one truncation of ``unroll`` steps, estimates the
meta-gradient of the truncation's meta-loss (mean ``log(f_t / f_0)``) with

- ``bptt``: back-propagation through the truncation (optimizee gradients not differentiated
  unless ``second_order``),
- ``es``: antithetic ES on the truncation, every particle starting from the group's state,
  which then advances with the unperturbed weights (truncated ES),
- ``pes``: persistent ES, each particle keeping its own trajectory for the whole episode,

clips the meta-gradient's global norm, and takes an Adam step. The truncation length can
follow a curriculum (linear from ``curriculum_start`` to ``unroll`` over ``curriculum_steps``
outer steps). Checkpoints are atomic (:class:`l2o.meta.checkpoint.Checkpointer`); a NaN/Inf
meta-loss or meta-gradient rolls back to the last checkpoint and says so.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from l2o.io import jsonable
from l2o.learned.adaptation import check_adapt
from l2o.learned.base import LearnedRule
from l2o.meta.batched import BatchedEpisode, batched_unroll, start_episode
from l2o.meta.checkpoint import (Checkpointer, generator_from_tensor, generator_to_tensor, optimizer_from_tensors,
                                 optimizer_to_tensors, prefixed, unprefixed)
from l2o.meta.estimators import PES, antithetic_es, flatten_module, load_flat
from l2o.tasks.base import seed_from

ESTIMATORS = ("bptt", "es", "pes")
META_LR_DECAYS = ("constant", "cosine")
_VAL_SEED = 987_654_321


@dataclass
class GeneralConfig:
    """Settings of :class:`GeneralTrainer`.

    Attributes:
        estimator: "bptt", "es" or "pes".
        outer_steps: number of meta-updates.
        batch_size: task instances advanced together in one episode group.
        groups: episode groups in flight (taken in turn; decorrelates consecutive updates).
        unroll: truncation length (inner steps per outer step) at the end of the curriculum.
        curriculum_start: truncation length at the start (None: no curriculum).
        curriculum_steps: outer steps over which the truncation grows to ``unroll``.
        meta_lr: Adam learning rate of the meta-optimizer.
        meta_lr_decay: "constant", or "cosine": the meta learning rate follows half a cosine from
            ``meta_lr`` at the first outer step to 0 after the last (:meth:`meta_lr_at`), so that
            the final weights are those of a settled run rather than a draw from a wandering one.
        clip: global-norm clip of the meta-gradient (None: none).
        sigma, pairs: ES/PES perturbation scale and antithetic pairs.
        second_order: BPTT through the optimizee gradients too.
        checkpoint_every: outer steps between checkpoints.
        val_every: outer steps between validations (0: never).
        val_steps: inner steps of each validation episode.
        seed: seeds the task sampler and the ES noise.
        adapt: rate of the per-tensor step-size adaptation the rule runs under, in training and
            validation (:mod:`l2o.learned.adaptation`; 0: off). ``l2o meta train`` records it in the
            weights' card, and ``LearnedOptimizer`` deploys them with it by default.
        max_rollbacks: give up after that many NaN/Inf rollbacks.
    """

    estimator: str = "bptt"
    outer_steps: int = 1000
    batch_size: int = 8
    groups: int = 4
    unroll: int = 20
    curriculum_start: int | None = None
    curriculum_steps: int = 0
    meta_lr: float = 3e-3
    meta_lr_decay: str = "constant"
    clip: float | None = 1.0
    sigma: float = 0.01
    pairs: int = 4
    second_order: bool = False
    checkpoint_every: int = 50
    val_every: int = 100
    val_steps: int = 200
    seed: int = 0
    max_rollbacks: int = 5
    adapt: float = 0.0

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        for name in ("outer_steps", "batch_size", "groups", "unroll", "checkpoint_every", "val_steps", "pairs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.curriculum_start is not None and not 1 <= self.curriculum_start <= self.unroll:
            raise ValueError(f"curriculum_start must be in [1, unroll={self.unroll}], got {self.curriculum_start}")
        if not self.meta_lr > 0:
            raise ValueError(f"meta_lr must be > 0, got {self.meta_lr}")
        if self.meta_lr_decay not in META_LR_DECAYS:
            raise ValueError(f"meta_lr_decay must be one of {META_LR_DECAYS}, got {self.meta_lr_decay!r}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be > 0 or None, got {self.clip}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        check_adapt(self.adapt)

    def meta_lr_at(self, step: int) -> float:
        """Meta learning rate of outer step ``step`` (0-based; see ``meta_lr_decay``)."""
        if self.meta_lr_decay == "constant":
            return self.meta_lr
        return self.meta_lr * 0.5 * (1.0 + math.cos(math.pi * min(step / self.outer_steps, 1.0)))

    def unroll_at(self, step: int) -> int:
        """Truncation length at outer step ``step`` (the curriculum)."""
        if self.curriculum_start is None or self.curriculum_steps <= 0:
            return self.unroll
        frac = min(step / self.curriculum_steps, 1.0)
        return int(round(self.curriculum_start + frac * (self.unroll - self.curriculum_start)))


@dataclass
class GeneralSummary:
    """What a run did: outer steps, inner steps (instances x updates), wall and CPU seconds of
    the outer steps, rollbacks, history."""

    outer_steps: int = 0
    inner_steps: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    rollbacks: int = 0
    best_val: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def inner_steps_per_second(self) -> float:
        return self.inner_steps / self.seconds if self.seconds > 0 else 0.0


class GeneralTrainer:
    """Meta-trains ``rule`` on ``family`` (which must offer ``sample_batch``).

    Args:
        rule: the learned rule; trained in place.
        family: a task family with ``sample_batch(generator, size)`` (e.g. GeneralFamily).
        config: the settings.
        directory: checkpoint directory (None: no checkpoints).
        log: print progress lines (rollbacks, validations) to stderr.
    """

    def __init__(self, rule: LearnedRule, family, config: GeneralConfig | None = None,
                 directory: str | Path | None = None, log: bool = True):
        self.rule, self.family = rule, family
        self.config = config or GeneralConfig()
        self.checkpointer = Checkpointer(directory, self.config.checkpoint_every) if directory else None
        self.log = log
        self.meta_opt = torch.optim.Adam(rule.parameters(), lr=self.config.meta_lr)
        self.sampler = torch.Generator().manual_seed(self.config.seed)
        self.noise = torch.Generator().manual_seed(self.config.seed + 1)
        self.groups: list[Any] = [None] * self.config.groups
        self.summary = GeneralSummary()
        self._es_rule = copy.deepcopy(rule) if self.config.estimator != "bptt" else None
        self._val_episodes = None

    # -- episodes ---------------------------------------------------------------------------
    def _new_episode(self, generator: torch.Generator) -> BatchedEpisode:
        tasks = self.family.sample_batch(generator, self.config.batch_size)
        seeds = [seed_from(generator) for _ in tasks]
        return start_episode(self.rule, tasks, seeds, tasks[0].steps, adapt=self.config.adapt)

    def _group(self, index: int):
        entry = self.groups[index]
        if entry is None or self._episode_of(entry).done:
            episode = self._new_episode(self.sampler)
            if self.config.estimator == "pes":
                pes = PES(self.config.sigma, self.config.pairs)
                pes.reset(episode.clone, flatten_module(self.rule).numel())
                entry = pes
            else:
                entry = episode
            self.groups[index] = entry
        return entry

    @staticmethod
    def _episode_of(entry) -> BatchedEpisode:
        return entry.states[0] if isinstance(entry, PES) else entry

    # -- one outer step -------------------------------------------------------------------------
    def _particles_objective(self, episodes: list[BatchedEpisode], steps: int):
        def objective(thetas: torch.Tensor):
            losses = []
            with torch.no_grad():
                for theta, episode in zip(thetas, episodes):
                    load_flat(self._es_rule, theta)
                    losses.append(batched_unroll(self._es_rule, episode, steps).meta_loss)
            return torch.stack(losses)
        return objective

    def _outer_step(self, step: int) -> tuple[float, int]:
        cfg = self.config
        entry = self._group(step % cfg.groups)
        episode = self._episode_of(entry)
        k = max(1, min(cfg.unroll_at(step), episode.horizon - episode.step))
        self.meta_opt.zero_grad(set_to_none=True)
        if cfg.estimator == "bptt":
            result = batched_unroll(self.rule, episode, k, second_order=cfg.second_order)
            meta_loss = result.meta_loss
            if torch.isfinite(meta_loss) and meta_loss.requires_grad:
                meta_loss.backward()
            value = float(meta_loss.detach())
            if not result.finite:
                self.groups[step % cfg.groups] = None  # an inner divergence ends the episode
        else:
            theta = flatten_module(self.rule)
            if cfg.estimator == "es":
                clones = [episode.clone() for _ in range(2 * cfg.pairs)]
                grad, value = antithetic_es(self._particles_objective(clones, k), theta, cfg.sigma, cfg.pairs, self.noise)
                with torch.no_grad():
                    result = batched_unroll(self.rule, episode, k)
                if not result.finite:
                    self.groups[step % cfg.groups] = None
            else:
                def truncation(thetas, states):
                    return self._particles_objective(states, k)(thetas), states

                grad, value = entry.step(truncation, theta, self.noise)
            offset = 0
            for p in self.rule.parameters():
                p.grad = grad[offset:offset + p.numel()].view_as(p).to(p.dtype).clone()
                offset += p.numel()
        grads_finite = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in self.rule.parameters())
        if not (math.isfinite(value) and grads_finite):
            return math.nan, k * cfg.batch_size
        if cfg.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.rule.parameters(), cfg.clip)
        for group in self.meta_opt.param_groups:
            group["lr"] = cfg.meta_lr_at(step)
        self.meta_opt.step()
        return value, k * cfg.batch_size

    # -- validation -----------------------------------------------------------------------------
    def validate(self) -> float:
        """Mean final ``log(f_T / f_0)`` over a fixed set of episodes (lower is better)."""
        if self._val_episodes is None:
            gen = torch.Generator().manual_seed(_VAL_SEED + self.config.seed)
            self._val_episodes = [(self.family.sample_batch(gen, self.config.batch_size), seed_from(gen))
                                  for _ in range(self.config.groups)]
        values = []
        with torch.no_grad():
            for tasks, seed in self._val_episodes:
                episode = start_episode(self.rule, tasks, [seed + i for i in range(len(tasks))], self.config.val_steps,
                                        adapt=self.config.adapt)
                result = batched_unroll(self.rule, episode, self.config.val_steps)
                if result.finite:
                    values.append(math.log(max(result.losses[-1], 1e-30)) - math.log(float(episode.initial_loss.mean())))
                else:
                    values.append(math.inf)
        return float(sum(values) / len(values))

    # -- checkpoints ------------------------------------------------------------------------------
    def _snapshot(self, step: int) -> tuple[dict, dict]:
        tensors = prefixed("rule/", dict(self.rule.state_dict()))
        opt_tensors, opt_meta = optimizer_to_tensors(self.meta_opt)
        tensors.update(opt_tensors)
        tensors["gen/sampler"] = generator_to_tensor(self.sampler)
        tensors["gen/noise"] = generator_to_tensor(self.noise)
        summary = {k: v for k, v in asdict(self.summary).items() if k != "history"}
        meta = {"config": asdict(self.config), "optim": opt_meta, "summary": summary, "rule": self.rule.kind,
                "rule_config": self.rule.config()}
        return tensors, meta

    def _restore(self, tensors: dict, meta: dict) -> int:
        self.rule.load_state_dict(unprefixed("rule/", tensors))
        optimizer_from_tensors(self.meta_opt, tensors, meta["optim"])
        generator_from_tensor(tensors["gen/sampler"], self.sampler)
        generator_from_tensor(tensors["gen/noise"], self.noise)
        saved = meta.get("summary", {})
        for key in ("outer_steps", "inner_steps", "seconds", "cpu_seconds", "best_val"):
            if key in saved:
                setattr(self.summary, key, saved[key])
        self.groups = [None] * self.config.groups  # episodes in flight restart
        return int(meta["step"])

    def _say(self, message: str) -> None:
        if self.log:
            print(message, file=sys.stderr, flush=True)

    # -- the loop ---------------------------------------------------------------------------------
    def train(self, resume: bool = False, progress_bar: bool = True) -> GeneralSummary:
        """Run (or, with ``resume``, continue) meta-training; returns the summary."""
        from tqdm import tqdm

        cfg = self.config
        start = 0
        if resume and self.checkpointer is not None:
            loaded = self.checkpointer.load_last()
            if loaded is not None:
                start = self._restore(*loaded)
                self._say(f"resumed from {self.checkpointer.last_path} at outer step {start}")
        if self.checkpointer is not None and start == 0:
            self.checkpointer.save(0, *self._snapshot(0))
        bar = tqdm(total=cfg.outer_steps, initial=start, desc=f"meta-train ({cfg.estimator})", file=sys.stderr,
                   disable=not progress_bar, dynamic_ncols=True)
        step = start
        window: list[float] = []
        while step < cfg.outer_steps:
            t0, c0 = time.perf_counter(), time.process_time()
            value, inner = self._outer_step(step)
            self.summary.seconds += time.perf_counter() - t0
            self.summary.cpu_seconds += time.process_time() - c0
            if not math.isfinite(value):
                self.summary.rollbacks += 1
                if self.summary.rollbacks > cfg.max_rollbacks:
                    raise RuntimeError(f"meta-loss was NaN/Inf {self.summary.rollbacks} times; giving up at step {step}")
                if self.checkpointer is not None and self.checkpointer.load_last() is not None:
                    back = self._restore(*self.checkpointer.load_last())
                else:
                    back = step
                    self.groups = [None] * cfg.groups
                # Draw different tasks after the rollback, or the same NaN would come back.
                self.sampler.manual_seed(cfg.seed + 7919 * self.summary.rollbacks + back)
                self._say(f"non-finite meta-loss at outer step {step}: rolled back to the checkpoint of step {back}")
                step = back
                bar.n = step
                bar.refresh()
                continue
            step += 1
            self.summary.outer_steps = step
            self.summary.inner_steps += inner
            window.append(value)
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(meta_loss=f"{sum(window) / len(window):.3f}", unroll=cfg.unroll_at(step))
                self.summary.history.append({"step": step, "meta_loss": sum(window) / len(window),
                                             "inner_steps": self.summary.inner_steps,
                                             "seconds": round(self.summary.seconds, 2)})
                window = []
            if cfg.val_every and step % cfg.val_every == 0:
                val = self.validate()
                self.summary.history.append({"step": step, "val": val})
                self._say(f"outer step {step}: validation mean log(f_T/f_0) = {val:.4f}")
                if val < self.summary.best_val:
                    self.summary.best_val = val
                    if self.checkpointer is not None:
                        self.checkpointer.save_best(*self._snapshot(step))
            if self.checkpointer is not None and (self.checkpointer.due(step) or step == cfg.outer_steps):
                self.checkpointer.save(step, *self._snapshot(step))
                with open(self.checkpointer.directory / "history.jsonl", "a") as f:
                    for row in self.summary.history:
                        f.write(json.dumps(jsonable(row)) + "\n")
                self.summary.history.clear()
        bar.close()
        return self.summary


__all__ = ["GeneralConfig", "GeneralTrainer", "GeneralSummary", "ESTIMATORS"]
