"""Meta-training by truncated back-propagation through time (Andrychowicz et al. 2016).

An *episode* trains one optimizee, sampled from a task family, for ``horizon`` steps with the
learned rule. The episode is cut into truncations of ``unroll`` steps; after each truncation
the meta-loss (sum of the optimizee losses in it) is back-propagated into the rule's weights
and the meta-optimizer (Adam) steps. Optimizee parameters and rule state carry over from one
truncation to the next (detached) and are reset when a new episode starts.

Every ``val_every`` outer steps the rule is scored on fixed validation episodes (mean
optimizee training loss over the horizon, the meta-objective) and the best weights are kept.
Every ``checkpoint_every`` outer steps everything needed to continue exactly — rule weights,
meta-optimizer state, the episode in flight (optimizee parameters, rule state, batch
generator), the best weights and the history — is written atomically; ``resume=True`` continues
from there, and the result is the same as that of an uninterrupted run. A NaN/Inf meta-loss
or meta-gradient rolls back to the last checkpoint, says so on stderr, and moves on to a fresh
episode instead of writing garbage.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from l2o.learned.base import LearnedRule
from l2o.meta.checkpoint import (
    Checkpointer,
    generator_from_tensor,
    generator_to_tensor,
    nested_from_tensors,
    nested_to_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    prefixed,
    unprefixed,
)
from l2o.meta.unroll import detach_state, unroll
from l2o.tasks.base import TaskFamily

# Seed streams: training episodes and validation episodes never share a seed.
_VAL_OFFSET = 1_000_000_007


@dataclass
class BPTTConfig:
    """Settings of truncated-BPTT meta-training (defaults: the paper's).

    Attributes:
        unroll: optimizee steps per truncation (paper: 20).
        horizon: optimizee steps per episode (paper: 100).
        outer_steps: number of meta-updates (truncations) in the whole run.
        meta_lr: Adam learning rate of the meta-optimizer (paper: 1e-3).
        second_order: back-propagate through optimizee gradients (paper: no).
        grad_clip: clip the meta-gradient's global norm to this (None: no clipping).
        seed: seeds the episode stream.
        val_every: validate every that many outer steps (0: never; then the last weights are "best").
        val_episodes: number of fixed validation episodes.
        checkpoint_every: checkpoint interval in outer steps.
        max_rollbacks: give up after that many NaN/Inf rollbacks.
    """

    unroll: int = 20
    horizon: int = 100
    outer_steps: int = 1000
    meta_lr: float = 1e-3
    second_order: bool = False
    grad_clip: float | None = None
    seed: int = 0
    val_every: int = 100
    val_episodes: int = 4
    checkpoint_every: int = 50
    max_rollbacks: int = 10

    def __post_init__(self):
        for name in ("unroll", "horizon", "outer_steps", "checkpoint_every", "val_episodes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.horizon % self.unroll:
            raise ValueError(f"horizon ({self.horizon}) must be a multiple of unroll ({self.unroll})")
        if not self.meta_lr > 0:
            raise ValueError(f"meta_lr must be > 0, got {self.meta_lr}")
        if self.val_every < 0:
            raise ValueError(f"val_every must be >= 0, got {self.val_every}")


@dataclass
class BPTTSummary:
    """What a meta-training run produced."""

    outer_steps: int
    best_val: float
    best_step: int
    history: list[list[float]] = field(default_factory=list)  # [outer step, mean optimizee loss]
    val_history: list[list[float]] = field(default_factory=list)  # [outer step, validation score]
    rollbacks: int = 0
    train_seconds: float = 0.0
    inner_steps: int = 0

    @property
    def inner_steps_per_second(self) -> float:
        return self.inner_steps / self.train_seconds if self.train_seconds > 0 else float("nan")


class BPTTTrainer:
    """Truncated-BPTT meta-trainer of a :class:`~l2o.learned.base.LearnedRule`.

    Args:
        rule: the rule to train (modified in place; at the end it holds the best weights).
        family: the task family episodes are sampled from.
        config: settings.
        directory: where checkpoints go (None: no checkpoints, no resume).
        log: where messages (rollbacks, resume) are printed; default stderr.
    """

    def __init__(self, rule: LearnedRule, family: TaskFamily, config: BPTTConfig | None = None,
                 directory: str | Path | None = None, log: Callable[[str], None] | None = None):
        self.rule, self.family = rule, family
        self.config = config or BPTTConfig()
        self.checkpointer = Checkpointer(directory, self.config.checkpoint_every) if directory else None
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.meta_optimizer = torch.optim.Adam(self.rule.parameters(), lr=self.config.meta_lr)
        self.truncations_per_episode = self.config.horizon // self.config.unroll
        self._val_tasks = None

    # -- episodes ------------------------------------------------------------------------------

    def _episode_generator(self, episode: int, validation: bool = False) -> torch.Generator:
        offset = _VAL_OFFSET if validation else 0
        return torch.Generator().manual_seed(int(self.config.seed) * 7919 + offset + int(episode))

    def _start_episode(self, episode: int, validation: bool = False):
        generator = self._episode_generator(episode, validation)
        task = self.family.sample(generator)
        params = task.init_params(generator)
        return task, params, self.rule.init_state(params), generator

    def validate(self) -> float:
        """Mean optimizee training loss over the horizon, averaged over the validation episodes."""
        totals = []
        for i in range(self.config.val_episodes):
            task, params, state, generator = self._start_episode(i, validation=True)
            batches = task.batches(generator)
            losses = []
            for _ in range(self.truncations_per_episode):
                result = unroll(self.rule, task, params, state, batches, self.config.unroll)
                losses += result.losses
                if not result.finite:
                    return float("inf")
                params, state = detach_state(result.params, result.state)
            totals.append(sum(losses) / len(losses))
        return sum(totals) / len(totals)

    # -- checkpoints ---------------------------------------------------------------------------

    def _snapshot(self, progress: dict[str, Any], episode_state) -> tuple[dict, dict]:
        # Clones: the live weights keep changing after the snapshot is taken.
        tensors = prefixed("rule/", {k: v.detach().clone() for k, v in self.rule.state_dict().items()})
        optim_tensors, optim_meta = optimizer_to_tensors(self.meta_optimizer, prefix="optim/")
        tensors.update(optim_tensors)
        tensors.update(prefixed("best/", self._best_weights))
        meta = {"progress": progress, "optim": optim_meta, "config": asdict(self.config),
                "rule": self.rule.kind, "rule_config": self.rule.config()}
        if episode_state is not None:
            params, state, generator = episode_state
            p_tensors, p_index = nested_to_tensors({k: {"value": v} for k, v in params.items()}, prefix="ep_params/")
            s_tensors, s_index = nested_to_tensors(state, prefix="ep_state/")
            tensors.update({k: v.clone() for k, v in p_tensors.items()})
            tensors.update({k: v.clone() for k, v in s_tensors.items()})
            tensors["ep_generator"] = generator_to_tensor(generator)
            meta["episode_index"] = {"params": p_index, "state": s_index}
        return tensors, meta

    def _restore(self, tensors: dict, meta: dict):
        self.rule.load_state_dict(unprefixed("rule/", tensors))
        optimizer_from_tensors(self.meta_optimizer, tensors, meta["optim"], prefix="optim/")
        self._best_weights = {k: v.clone() for k, v in unprefixed("best/", tensors).items()}
        progress = meta["progress"]
        episode_state = None
        if "episode_index" in meta:
            index = meta["episode_index"]
            params = {k: v["value"] for k, v in nested_from_tensors(tensors, index["params"], prefix="ep_params/").items()}
            state = nested_from_tensors(tensors, index["state"], prefix="ep_state/")
            episode_state = (params, state, tensors["ep_generator"])
        return progress, episode_state

    # -- the outer loop ------------------------------------------------------------------------

    def train(self, resume: bool = False, progress_bar: bool = True) -> BPTTSummary:
        """Run (or continue) meta-training; at the end ``self.rule`` holds the best weights."""
        from tqdm.auto import tqdm

        cfg = self.config
        self._best_weights = {k: v.detach().clone() for k, v in self.rule.state_dict().items()}
        progress = {"step": 0, "episode": 0, "truncation": 0, "best_val": math.inf, "best_step": 0,
                    "history": [], "val_history": [], "rollbacks": 0, "train_seconds": 0.0, "inner_steps": 0}
        task = params = state = generator = batches = None
        loaded = self.checkpointer.load_last() if (resume and self.checkpointer) else None
        if loaded is not None:
            progress, episode_state = self._restore(*loaded)
            if episode_state is not None and progress["truncation"] > 0:
                params, state, gen_state = episode_state
                task = self.family.sample(self._episode_generator(progress["episode"]))
                generator = generator_from_tensor(gen_state)
                batches = task.batches(generator)
            self.log(f"resumed from {self.checkpointer.last_path} at outer step {progress['step']}")
        # The last good checkpoint, also kept in memory: what a NaN/Inf rolls back to.
        self._last_good = self._snapshot(copy.deepcopy(progress), None)
        if loaded is None and self.checkpointer:
            self.checkpointer.save(0, *self._last_good)

        bar = tqdm(total=cfg.outer_steps, initial=progress["step"], desc="meta-train", unit="step",
                   disable=not progress_bar, file=sys.stderr, dynamic_ncols=True)
        try:
            while progress["step"] < cfg.outer_steps:
                if progress["truncation"] == 0:
                    task, params, state, generator = self._start_episode(progress["episode"])
                    batches = task.batches(generator)
                start = time.perf_counter()
                result = unroll(self.rule, task, params, state, batches, cfg.unroll, second_order=cfg.second_order)
                ok = result.finite and torch.isfinite(result.meta_loss).item()
                if ok:
                    self.meta_optimizer.zero_grad(set_to_none=True)
                    result.meta_loss.backward()
                    grads = [p.grad for p in self.rule.parameters() if p.grad is not None]
                    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                    ok = bool(torch.isfinite(norm))
                if not ok:
                    bad_step = progress["step"] + 1
                    progress = self._rollback(progress, bad_step)
                    task = None
                    continue
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.rule.parameters(), cfg.grad_clip)
                self.meta_optimizer.step()
                params, state = detach_state(result.params, result.state)
                progress["train_seconds"] += time.perf_counter() - start
                progress["inner_steps"] += cfg.unroll
                progress["step"] += 1
                mean_loss = float(result.meta_loss.detach()) / cfg.unroll
                progress["history"].append([progress["step"], mean_loss])
                progress["truncation"] += 1
                if progress["truncation"] == self.truncations_per_episode:
                    progress["truncation"] = 0
                    progress["episode"] += 1
                step = progress["step"]
                if cfg.val_every and (step % cfg.val_every == 0 or step == cfg.outer_steps):
                    score = self.validate()
                    progress["val_history"].append([step, score])
                    if score < progress["best_val"]:
                        progress["best_val"], progress["best_step"] = score, step
                        self._best_weights = {k: v.detach().clone() for k, v in self.rule.state_dict().items()}
                        if self.checkpointer:
                            self.checkpointer.save_best(
                                self._best_weights, {"step": step, "val": score, "rule": self.rule.kind,
                                                     "config": self.rule.config()})
                elif not cfg.val_every:
                    self._best_weights = {k: v.detach().clone() for k, v in self.rule.state_dict().items()}
                    progress["best_step"] = step
                if self.checkpointer and (self.checkpointer.due(step) or step == cfg.outer_steps):
                    episode_state = (params, state, generator) if progress["truncation"] else None
                    self._last_good = self._snapshot(copy.deepcopy(progress), episode_state)
                    self.checkpointer.save(step, *self._last_good)
                elif not self.checkpointer and step % cfg.checkpoint_every == 0:
                    self._last_good = self._snapshot(copy.deepcopy(progress), None)
                bar.update(1)
                postfix = {"meta_loss": f"{mean_loss:.4f}"}
                if progress["val_history"]:
                    postfix["best_val"] = f"{progress['best_val']:.4f}"
                bar.set_postfix(postfix, refresh=False)
        finally:
            bar.close()
        self.rule.load_state_dict(self._best_weights)
        return BPTTSummary(
            outer_steps=progress["step"], best_val=progress["best_val"], best_step=progress["best_step"],
            history=progress["history"], val_history=progress["val_history"], rollbacks=progress["rollbacks"],
            train_seconds=progress["train_seconds"], inner_steps=progress["inner_steps"],
        )

    def _rollback(self, progress: dict, bad_step: int) -> dict:
        """Restore the last good checkpoint after a NaN/Inf and move on to a fresh episode."""
        rollbacks = progress["rollbacks"] + 1
        if rollbacks > self.config.max_rollbacks:
            raise RuntimeError(f"meta-loss or meta-gradient was NaN/Inf {rollbacks} times; giving up "
                               f"(try a smaller meta_lr or grad_clip)")
        next_episode = progress["episode"] + 1
        self.meta_optimizer.zero_grad(set_to_none=True)
        tensors, meta = self._last_good
        restored, _ = self._restore(tensors, copy.deepcopy(meta))
        self.log(f"warning: non-finite meta-loss or meta-gradient at outer step {bad_step}: rolled back to "
                 f"the checkpoint of outer step {restored['step']} and starting a fresh episode")
        progress = restored
        progress["rollbacks"] = rollbacks
        progress["episode"] = max(progress["episode"], next_episode)
        progress["truncation"] = 0
        return progress


__all__ = ["BPTTConfig", "BPTTSummary", "BPTTTrainer"]
