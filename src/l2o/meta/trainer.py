"""The meta-trainer: one outer loop for every estimator, task family and meta-loss.

:class:`MetaTrainer` keeps ``groups`` episodes in flight (:class:`l2o.meta.episode.Episode`,
``batch_size`` task instances each, or the paper's one unstacked task with
``batch_size=None``), taken in turn. Every outer step advances the next group by one
truncation of ``unroll`` steps (optionally growing by a curriculum) through its estimator
(:mod:`l2o.meta.estimators`: BPTT, truncated ES or PES, each with its own state), clips the
meta-gradient's global norm and takes an Adam step.

Exactness. Episode ``i`` is drawn from a generator seeded by ``(seed, i)`` and each outer step's
perturbations from one seeded by ``(seed, step, rollbacks)``, and a checkpoint holds everything
else that moves: the rule's weights, Adam's state, the best weights, the progress and history,
and every group in flight (its episodes' parameters, rule state and minibatch generators, and
the estimator's state, e.g. PES's particles and accumulated perturbations). A run killed at
any moment and resumed therefore ends with the uninterrupted run's weights, bit for bit.

Rollback. A NaN/Inf meta-loss or meta-gradient restores the last checkpoint (kept in memory
too), says so, and goes on with fresh episodes; after ``max_rollbacks`` it gives up. An inner
divergence whose meta-loss stays finite (the clamped log ratio) ends that episode.

Bookkeeping. Every ``val_every`` outer steps and at the last one the rule is scored on fixed
validation episodes (:meth:`MetaLoss.validation`) and the best weights are kept
(``best.safetensors``); every ``checkpoint_every`` outer steps ``last.safetensors`` is written
atomically and ``history.jsonl`` gets the rows since the previous checkpoint (every 10 steps
the mean meta-loss, and the validations). :meth:`MetaTrainer.export` writes the final and
best weights with their model card and the run's figure.

Data-parallel meta-training (``torchrun``, one process per rank) is
:class:`l2o.meta.distributed.DistributedMetaTrainer`, which overrides hooks only: a rank draws
its share of each group's task batch (episode generators are keyed by episode and instance, not
by a shared stream) or of the antithetic pairs (:func:`l2o.meta.estimators.base.pair_share`),
:meth:`MetaTrainer._reduce` all-reduces the meta-gradient, and only the writer
(:attr:`MetaTrainer.writes_files`, rank 0) writes files.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from l2o.learned.adaptation import check_adapt
from l2o.learned.base import LearnedRule
from l2o.meta.checkpoint import Checkpointer, optimizer_from_tensors, optimizer_to_tensors, prefixed, unprefixed
from l2o.meta.episode import META_LOSSES, Episode, MetaLoss, start_episode
from l2o.meta.estimators import ESTIMATORS, GradientEstimator
from l2o.meta.estimators.base import flatten_module, load_flat
from l2o.tasks.base import TaskFamily, seed_from

#: the checkpoint layout this trainer writes and reads
CHECKPOINT_FORMAT = "l2o-meta-2"
META_LR_DECAYS = ("constant", "cosine")
# Seed streams: training and validation episodes never share a seed.
_VAL_OFFSET = 1_000_000_007
#: outer steps per history row of the meta-loss
HISTORY_EVERY = 10


@dataclass
class MetaConfig:
    """Settings of :class:`MetaTrainer`.

    Attributes:
        estimator: "bptt", "es" or "pes".
        meta_loss: "log_ratio" (mean log(f_t / f_0)) or "sum" (the paper's sum of losses).
        outer_steps: meta-updates in the whole run.
        batch_size: task instances per episode (stacked; the family's ``sample_batch``), or None:
            one task per episode from the family's ``sample``, unstacked (the paper's setting).
        groups: episodes in flight, taken in turn (decorrelates consecutive updates).
        unroll: truncation length (inner steps per outer step) at the end of the curriculum.
        horizon: inner steps per episode (None: the first task's ``steps``).
        curriculum_start, curriculum_steps: the truncation grows linearly from
            ``curriculum_start`` to ``unroll`` over ``curriculum_steps`` outer steps (None: no curriculum).
        meta_lr: Adam learning rate of the meta-optimizer.
        meta_lr_decay: "constant", or "cosine": half a cosine from ``meta_lr`` to 0 over the run.
        clip: global-norm clip of the meta-gradient (None: none).
        sigma, pairs: ES/PES perturbation scale and antithetic pairs.
        second_order: BPTT through the optimizee gradients too.
        checkpoint_every: outer steps between checkpoints (and in-memory rollback points).
        val_every: outer steps between validations (0: never; then the last weights are "best").
        val_episodes: fixed validation episodes.
        val_steps: inner steps of a validation episode (None: the horizon).
        seed: seeds the episode stream and the perturbations.
        adapt: rate of the per-tensor step-size adaptation the rule runs under (0: off).
        max_rollbacks: give up after that many NaN/Inf rollbacks.
    """

    estimator: str = "bptt"
    meta_loss: str = "log_ratio"
    outer_steps: int = 1000
    batch_size: int | None = 8
    groups: int = 4
    unroll: int = 20
    horizon: int | None = None
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
    val_episodes: int = 4
    val_steps: int | None = 200
    seed: int = 0
    adapt: float = 0.0
    max_rollbacks: int = 5

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {tuple(ESTIMATORS)}, got {self.estimator!r}")
        if self.meta_loss not in META_LOSSES:
            raise ValueError(f"meta_loss must be one of {tuple(META_LOSSES)}, got {self.meta_loss!r}")
        for name in ("outer_steps", "groups", "unroll", "checkpoint_every", "val_episodes", "pairs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("batch_size", "horizon", "val_steps"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
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
        if self.val_every < 0:
            raise ValueError(f"val_every must be >= 0, got {self.val_every}")
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
class MetaSummary:
    """Where a run stands (checkpointed as JSON) and what it did.

    Attributes:
        outer_steps: meta-updates done.
        next_episode: the index of the next episode to draw.
        inner_steps: optimizee updates done (instances x steps).
        seconds, cpu_seconds: wall and CPU time of the outer steps (validation excluded).
        rollbacks: NaN/Inf rollbacks.
        best_val, best_step: the best validation score and its outer step.
        history: ``[outer step, meta-loss per inner step]`` for every outer step.
        val_history: ``[outer step, validation score]``.
    """

    outer_steps: int = 0
    next_episode: int = 0
    inner_steps: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    rollbacks: int = 0
    best_val: float = math.inf
    best_step: int = 0
    history: list[list[float]] = field(default_factory=list)
    val_history: list[list[float]] = field(default_factory=list)

    @property
    def inner_steps_per_second(self) -> float:
        return self.inner_steps / self.seconds if self.seconds > 0 else float("nan")

    @property
    def train_seconds(self) -> float:
        return self.seconds

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["best_val"] = None if not math.isfinite(self.best_val) else self.best_val
        out["history"] = [[s, v if math.isfinite(v) else None] for s, v in self.history]
        out["val_history"] = [[s, v if math.isfinite(v) else None] for s, v in self.val_history]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MetaSummary:
        data = dict(data)
        data["best_val"] = math.inf if data.get("best_val") is None else data["best_val"]
        data["history"] = [[s, math.nan if v is None else v] for s, v in data.get("history", [])]
        data["val_history"] = [[s, math.inf if v is None else v] for s, v in data.get("val_history", [])]
        return cls(**data)


class EpisodeUnroll:
    """The :class:`~l2o.meta.estimators.base.Unroll` of one truncation of ``steps`` steps."""

    def __init__(self, rule: LearnedRule, scratch: LearnedRule | None, meta_loss: MetaLoss, steps: int,
                 second_order: bool):
        self.rule, self.scratch, self.meta_loss = rule, scratch, meta_loss
        self.steps, self.second_order = steps, second_order

    def differentiable(self, episode: Episode) -> tuple[Tensor, bool]:
        result = episode.advance(self.rule, self.steps, self.meta_loss, second_order=self.second_order)
        return result.meta_loss, result.finite

    def forward(self, thetas: Tensor, episodes: list[Episode]) -> tuple[Tensor, bool]:
        losses, finite = [], True
        with torch.no_grad():
            for theta, episode in zip(thetas, episodes):
                load_flat(self.scratch, theta)
                result = episode.advance(self.scratch, self.steps, self.meta_loss)
                losses.append(result.meta_loss)
                finite = finite and result.finite
        return torch.stack(losses), finite

    def clone(self, episode: Episode) -> Episode:
        return episode.clone()


def _key(*numbers: int) -> torch.Generator:
    """A generator seeded by a tuple of integers (counter-based: no stream to checkpoint)."""
    value = 0
    for n in numbers:
        value = (value * 1_000_003 + int(n)) % (2**61 - 1)
    return torch.Generator().manual_seed(value)


class MetaTrainer:
    """Meta-trains ``rule`` on ``family`` (see the module docstring).

    Args:
        rule: the learned rule; trained in place (at the end it holds the last weights;
            :meth:`best_state` the best on validation).
        family: a task family (``sample_batch`` for stacked episodes, ``sample`` for ``batch_size=None``).
        config: the settings.
        directory: where checkpoints, history and exported weights go (None: nowhere, no resume).
        log: where messages (resume, rollbacks, validations) go; default stderr, None: silent.
    """

    def __init__(self, rule: LearnedRule, family: TaskFamily, config: MetaConfig | None = None,
                 directory: str | Path | None = None, log: Callable[[str], None] | None | bool = True):
        self.rule, self.family = rule, family
        self.config = config or MetaConfig()
        cfg = self.config
        self.directory = Path(directory) if directory is not None else None
        self.checkpointer = Checkpointer(self.directory, cfg.checkpoint_every) if self.directory else None
        if log is True:
            log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
        self.log = log or (lambda message: None)
        self.meta_optimizer = torch.optim.Adam(rule.parameters(), lr=cfg.meta_lr)
        self.meta_loss: MetaLoss = META_LOSSES[cfg.meta_loss]()
        self.estimator: GradientEstimator = self._make_estimator()
        self._scratch = copy.deepcopy(rule) if cfg.estimator != "bptt" else None
        self.summary = MetaSummary()
        self.groups: list[Any] = [None] * cfg.groups
        self._best: dict[str, Tensor] = self._weights()
        self._last_good: tuple[dict, dict] | None = None
        self._flushed_step = 0  # history.jsonl holds the rows up to this outer step

    # -- distribution hooks (one process here; l2o.meta.distributed.DistributedMetaTrainer) -------------
    @property
    def world_size(self) -> int:
        """The number of processes meta-training together (recorded in history and the model card)."""
        return 1

    @property
    def writes_files(self) -> bool:
        """Whether this process writes checkpoints, history and weights (rank 0 of a group)."""
        return True

    def _reduce(self, grad: Tensor, value: float, finite: bool) -> tuple[Tensor, float, bool]:
        """The meta-gradient and meta-loss summed, and whether every inner unroll stayed finite, over
        the processes of a data-parallel run (one process: its own)."""
        return grad, value, finite

    def _episode_size(self, episode: Episode) -> int:
        """The task instances of the whole episode (a process of a data-parallel run holds a share)."""
        return episode.size

    def _make_unroll(self, steps: int) -> EpisodeUnroll:
        return EpisodeUnroll(self.rule, self._scratch, self.meta_loss, steps, self.config.second_order)

    # -- pieces -------------------------------------------------------------------------------------
    def _make_estimator(self) -> GradientEstimator:
        cfg = self.config
        if cfg.estimator == "bptt":
            return ESTIMATORS["bptt"](list(self.rule.parameters()))
        return ESTIMATORS[cfg.estimator](cfg.sigma, cfg.pairs)

    def _weights(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.rule.state_dict().items()}

    def best_state(self) -> dict[str, Tensor]:
        """The best-on-validation weights (the last ones when the run does not validate)."""
        return {k: v.clone() for k, v in self._best.items()}

    def _episode_tasks(self, index: int, validation: bool = False):
        """The tasks of episode ``index`` and their generators, drawn from a generator keyed by
        (seed, index): the same tasks on resume, whichever episodes were drawn before."""
        cfg = self.config
        generator = torch.Generator().manual_seed(int(cfg.seed) * 7919 + (_VAL_OFFSET if validation else 0) + int(index))
        if cfg.batch_size is None:
            # the paper's episode: the task, its initial parameters and its batches from one generator
            return [self.family.sample(generator)], [generator]
        tasks = self.family.sample_batch(generator, cfg.batch_size)
        return tasks, [torch.Generator().manual_seed(seed_from(generator)) for _ in tasks]

    def _horizon(self, tasks) -> int:
        if self.config.horizon is not None:
            return self.config.horizon
        steps = getattr(tasks[0], "steps", None)
        if steps is None:
            raise ValueError(f"{type(tasks[0]).__name__} has no 'steps' (its episode length): give the config a horizon")
        return int(steps)

    def start_episode(self, index: int, validation: bool = False) -> Episode:
        tasks, generators = self._episode_tasks(index, validation)
        horizon = self._horizon(tasks)
        if validation and self.config.val_steps is not None:
            horizon = self.config.val_steps
        return start_episode(self.rule, tasks, None, horizon, generators=generators,
                             stacked=self.config.batch_size is not None, adapt=self.config.adapt, index=index)

    def _load_episode(self, tensors: dict, meta: dict, prefix: str) -> Episode:
        tasks, _ = self._episode_tasks(int(meta["index"]))
        device = next((p.device for p in self.rule.parameters()), torch.device("cpu"))
        return Episode.from_tensors(tasks, tensors, meta, prefix, stacked=self.config.batch_size is not None,
                                    device=device, adapt=self.config.adapt)

    def _group(self, index: int):
        state = self.groups[index]
        if state is None or self.estimator.episode_of(state).done:
            episode = self.start_episode(self.summary.next_episode)
            self.summary.next_episode += 1
            state = self.estimator.init_state(episode, flatten_module(self.rule).numel())
            self.groups[index] = state
        return state

    # -- validation ---------------------------------------------------------------------------------
    def validate(self) -> float:
        """The mean validation score over the fixed validation episodes (lower is better; inf
        when one diverges)."""
        scores = []
        for i in range(self.config.val_episodes):
            score = self.validation_score(i)
            if not math.isfinite(score):
                return math.inf
            scores.append(score)
        return sum(scores) / len(scores)

    def validation_score(self, index: int) -> float:
        """The score of validation episode ``index`` (inf when it diverges)."""
        needs_final = isinstance(self.meta_loss, META_LOSSES["log_ratio"])
        with torch.no_grad():
            episode = self.start_episode(index, validation=True)
            result = episode.advance(self.rule, episode.horizon, self.meta_loss, final=needs_final)
        if not result.finite:
            return math.inf
        return self.meta_loss.validation(result.losses, result.final, float(episode.initial_loss.mean()))

    # -- checkpoints --------------------------------------------------------------------------------
    def _snapshot(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = prefixed("rule/", self._weights())
        opt_tensors, opt_meta = optimizer_to_tensors(self.meta_optimizer, prefix="optim/")
        tensors.update(opt_tensors)
        tensors.update(prefixed("best/", self._best))
        groups = []
        for i, state in enumerate(self.groups):
            if state is None:
                groups.append(None)
                continue
            t, m = self.estimator.state_to_tensors(state, f"group/{i}/")
            tensors.update(t)
            groups.append(m)
        meta = {"format": CHECKPOINT_FORMAT, "summary": self.summary.to_json(), "optim": opt_meta,
                "config": asdict(self.config), "groups": groups, "rule": self.rule.kind,
                "rule_config": self.rule.config()}
        return tensors, copy.deepcopy(meta)

    def _restore(self, tensors: dict[str, Tensor], meta: dict[str, Any], source: str) -> None:
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{source} was written by an earlier l2o meta-trainer (checkpoint layout "
                             f"{meta.get('format', 'l2o-meta-1')!r}, this one reads {CHECKPOINT_FORMAT!r}) and cannot "
                             f"be resumed exactly; start the run again in a new directory")
        if meta.get("rule") != self.rule.kind or meta.get("rule_config") != self.rule.config():
            raise ValueError(f"{source} holds a {meta.get('rule')} rule {meta.get('rule_config')}, not this "
                             f"{self.rule.kind} rule {self.rule.config()}")
        saved = meta.get("config", {})
        for name in ("estimator", "batch_size", "groups", "pairs", "meta_loss"):
            if saved.get(name) != getattr(self.config, name):
                raise ValueError(f"{source} was written with {name}={saved.get(name)!r}; resuming it with "
                                 f"{name}={getattr(self.config, name)!r} would not continue that run")
        self.rule.load_state_dict(unprefixed("rule/", tensors))
        optimizer_from_tensors(self.meta_optimizer, tensors, meta["optim"], prefix="optim/")
        self._best = {k: v.clone() for k, v in unprefixed("best/", tensors).items()}
        self.summary = MetaSummary.from_json(meta["summary"])
        self.groups = [None if m is None else
                       self.estimator.state_from_tensors(tensors, m, f"group/{i}/", self._load_episode)
                       for i, m in enumerate(meta["groups"])]

    def _checkpoint(self) -> None:
        self._last_good = self._snapshot()
        if self.checkpointer is not None and self.writes_files:
            self.checkpointer.save(self.summary.outer_steps, *self._last_good)
            self._flush_history()

    def _flush_history(self) -> None:
        """Append to history.jsonl the rows of the outer steps since the last flush."""
        rows = []
        values = dict((int(s), v) for s, v in self.summary.history)
        end = self.summary.outer_steps
        for step in range(self._flushed_step + 1, end + 1):
            if step % HISTORY_EVERY == 0:
                window = [values[s] for s in range(step - HISTORY_EVERY + 1, step + 1) if s in values]
                if window:
                    rows.append({"step": step, "meta_loss": sum(window) / len(window), "world_size": self.world_size})
        rows += [{"step": int(s), "val": v, "world_size": self.world_size} for s, v in self.summary.val_history
                 if self._flushed_step < s <= end]
        rows.sort(key=lambda row: (row["step"], "val" in row))
        if rows:
            from l2o.io import jsonable

            with open(self.directory / "history.jsonl", "a") as f:
                for row in rows:
                    f.write(json.dumps(jsonable(row)) + "\n")
        self._flushed_step = end

    # -- the loop -----------------------------------------------------------------------------------
    def _outer_step(self, step: int) -> tuple[float, bool, int]:
        """One meta-update attempt: (meta-loss per inner step, accepted, inner steps)."""
        cfg = self.config
        index = step % cfg.groups
        state = self._group(index)
        episode = self.estimator.episode_of(state)
        k = max(1, min(cfg.unroll_at(step), episode.horizon - episode.step))
        theta = flatten_module(self.rule)
        unroll = self._make_unroll(k)
        estimate = self.estimator.estimate(unroll, theta, state, _key(cfg.seed, step, self.summary.rollbacks))
        grad, value, finite = self._reduce(estimate.grad, estimate.value, estimate.finite)
        if not (math.isfinite(value) and bool(torch.isfinite(grad).all())):
            return value, False, 0
        self.groups[index] = estimate.state if finite else None  # an inner divergence ends the episode
        offset = 0
        for p in self.rule.parameters():
            p.grad = grad[offset:offset + p.numel()].view_as(p).to(p.dtype).clone()
            offset += p.numel()
        if cfg.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.rule.parameters(), cfg.clip)
        for group in self.meta_optimizer.param_groups:
            group["lr"] = cfg.meta_lr_at(step)
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)
        return self.meta_loss.per_step(value, k), True, k * self._episode_size(episode)

    def _rollback(self, bad_step: int) -> None:
        rollbacks = self.summary.rollbacks + 1
        if rollbacks > self.config.max_rollbacks:
            raise RuntimeError(f"meta-loss or meta-gradient was NaN/Inf {rollbacks} times; giving up at outer step "
                               f"{bad_step} (try a smaller meta learning rate or a clip)")
        next_episode = self.summary.next_episode
        self._restore(*self._last_good, source="the last checkpoint")
        self.summary.rollbacks = rollbacks
        self.summary.next_episode = max(self.summary.next_episode, next_episode)
        self.groups = [None] * self.config.groups  # fresh episodes, or the same NaN would come back
        self.log(f"warning: non-finite meta-loss or meta-gradient at outer step {bad_step}: rolled back to the "
                 f"checkpoint of outer step {self.summary.outer_steps} and starting fresh episodes")

    def train(self, resume: bool = False, progress_bar: bool = True) -> MetaSummary:
        """Run (or, with ``resume``, continue from ``directory``'s last checkpoint) meta-training."""
        from tqdm.auto import tqdm

        cfg = self.config
        loaded = self.checkpointer.load_last() if (resume and self.checkpointer) else None
        if loaded is not None:
            self._restore(*loaded, source=str(self.checkpointer.last_path))
            self._flushed_step = self.summary.outer_steps
            self.log(f"resumed from {self.checkpointer.last_path} at outer step {self.summary.outer_steps}")
            self._last_good = self._snapshot()
        else:
            if self.directory is not None and self.writes_files:
                (self.directory / "history.jsonl").unlink(missing_ok=True)
            self._checkpoint()
        bar = tqdm(total=cfg.outer_steps, initial=self.summary.outer_steps, desc=f"meta-train ({cfg.estimator})",
                   unit="step", disable=not progress_bar, file=sys.stderr, dynamic_ncols=True)
        try:
            while self.summary.outer_steps < cfg.outer_steps:
                step = self.summary.outer_steps
                t0, c0 = time.perf_counter(), time.process_time()
                value, accepted, inner = self._outer_step(step)
                if not accepted:
                    self._rollback(step + 1)
                    bar.n = self.summary.outer_steps
                    bar.refresh()
                    continue
                self.summary.seconds += time.perf_counter() - t0
                self.summary.cpu_seconds += time.process_time() - c0
                self.summary.inner_steps += inner
                step = self.summary.outer_steps = step + 1
                self.summary.history.append([step, value])
                if cfg.val_every and (step % cfg.val_every == 0 or step == cfg.outer_steps):
                    score = self.validate()
                    self.summary.val_history.append([step, score])
                    self.log(f"outer step {step}: validation {self.meta_loss.validation_name} = {score:.4f}")
                    if score < self.summary.best_val:
                        self.summary.best_val, self.summary.best_step = score, step
                        self._best = self._weights()
                        if self.checkpointer is not None and self.writes_files:
                            self.checkpointer.save_best(self._best, {"step": step, "val": score, "rule": self.rule.kind,
                                                                     "config": self.rule.config()})
                elif not cfg.val_every:
                    self._best, self.summary.best_step = self._weights(), step
                if step % cfg.checkpoint_every == 0 or step == cfg.outer_steps:
                    self._checkpoint()
                bar.update(1)
                postfix = {"meta_loss": f"{value:.4f}"}
                if self.summary.val_history:
                    postfix["best_val"] = f"{self.summary.best_val:.4f}"
                bar.set_postfix(postfix, refresh=False)
        finally:
            bar.close()
        return self.summary

    # -- what a run leaves --------------------------------------------------------------------------
    def card(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The model card of the weights this run produced: its config and summary, plus ``extra``."""
        s = self.summary
        training = {"config": asdict(self.config), "outer_steps": s.outer_steps, "inner_steps": s.inner_steps,
                    "meta_train_seconds": round(s.seconds, 1), "meta_train_cpu_seconds": round(s.cpu_seconds, 1),
                    "threads": torch.get_num_threads(), "rollbacks": s.rollbacks,
                    "best_val": s.best_val if math.isfinite(s.best_val) else None, "best_step": s.best_step,
                    "meta_loss": self.meta_loss.name, "world_size": self.world_size}
        if self.config.meta_loss == "log_ratio":  # the name earlier cards used
            training["best_val_log_loss_ratio"] = training["best_val"] if s.val_history else None
        card: dict[str, Any] = {"training": training}
        for key, value in (extra or {}).items():
            if key == "training":
                training.update(value)
            else:
                card[key] = value
        if self.config.adapt:  # what the weights were trained to run under: LearnedOptimizer's default
            card["deploy"] = {"adapt": self.config.adapt}
        return card

    def export(self, extra: dict[str, Any] | None = None, title: str | None = None) -> dict[str, Path]:
        """Write ``weights.safetensors`` (the last weights), ``best_weights.safetensors`` (when the run
        validated) with their model card, and the run's figure ``training.png``; returns the paths."""
        from l2o.learned.weights import save_rule

        if self.directory is None:
            raise ValueError("export needs the trainer's directory")
        card = self.card(extra)
        paths = {"weights": save_rule(self.directory / "weights.safetensors", self.rule, card)}
        if self.config.val_every and self.summary.val_history:
            best = copy.deepcopy(self.rule)
            best.load_state_dict(self._best)
            paths["best_weights"] = save_rule(self.directory / "best_weights.safetensors", best,
                                              {**card, "selected": "best validation",
                                               "selected_at_outer_step": self.summary.best_step})
        from l2o.meta.plot import plot_history, read_history

        history = self.directory / "history.jsonl"
        if history.is_file() and any(read_history(history)):  # nothing to draw before 10 steps or a validation
            paths["plot"] = plot_history(history, self.directory / "training.png", title)
        return paths


__all__ = ["MetaConfig", "MetaSummary", "MetaTrainer", "EpisodeUnroll", "CHECKPOINT_FORMAT"]
