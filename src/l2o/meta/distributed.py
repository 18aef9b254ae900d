"""Data-parallel meta-training under ``torchrun`` (one process per rank, torch.distributed).

:class:`DistributedMetaTrainer` is :class:`~l2o.meta.trainer.MetaTrainer` split over the
processes of a process group:

- BPTT: a rank advances its share of each episode's task batch, instances ``rank, rank +
  world, ...`` (episode generators are keyed by episode and instance, so a rank draws exactly
  the instances one process would have drawn for those slots). Its meta-loss is weighted by its
  share of the batch (the mean log ratio is a mean over instances; the sum of losses a sum) and
  the meta-gradients are all-reduced (summed).
- ES and PES: every rank keeps the whole (unperturbed) episode and evaluates only its share of
  the antithetic pairs (:func:`l2o.meta.estimators.base.pair_share`); the others' losses enter
  as zeros, so the local estimate is the partial sum and the all-reduce completes it. PES's
  particles persist across truncations: a rank advances only its own (the others' just count
  the steps), and a checkpoint gathers each particle from the rank that owns it.

Every rank then takes the same clipped Adam step from the same all-reduced gradient (gloo's
all-reduce hands every rank the same bits), so the rule's weights stay identical. Each rank scores
its share of the fixed validation episodes and one all-reduce sums the scores, so every rank gets
the same mean and the best weights agree too. Only rank 0 writes files;
a checkpoint gathers the ranks' shares of the episodes in flight into whole episodes, so it is
the one-process layout and a run resumes with any number of processes; on resume rank 0 reads
the checkpoint and broadcasts it (only rank 0 needs the ``--out`` directory).

Exactness: with the same seed and total task batch, N processes give one process's result up
to float rounding: the per-rank meta-losses are reduced in pieces and summed by the all-reduce
in another order than one process's single mean or sum.
"""

from __future__ import annotations

import dataclasses
import math
import os

import torch
import torch.distributed as dist
from torch import Tensor

from l2o.meta.episode import Episode
from l2o.meta.estimators.base import pair_share
from l2o.meta.trainer import EpisodeUnroll, MetaTrainer


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher setting WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_from_env(device: torch.device | str = "cpu") -> tuple[int, int]:
    """Join the process group torchrun describes (gloo for the CPU, nccl for CUDA); (rank, world size).
    On CUDA each rank takes the GPU of its LOCAL_RANK."""
    device = torch.device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def on_root(check) -> None:
    """Run ``check()`` on rank 0 only (e.g. checks of, and changes to, the output directory) and
    raise its ValueError/FileNotFoundError on every rank, so that no rank waits for one that quit."""
    box = [None]
    if dist.get_rank() == 0:
        try:
            check()
        except (ValueError, FileNotFoundError, KeyError) as exc:
            box = [str(exc.args[0]) if exc.args else str(exc)]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise ValueError(box[0])


def _share(n: int, rank: int, world: int) -> list[int]:
    return list(range(rank, n, world))


def _per_instance(tensor: Tensor, n: int) -> bool:
    return tensor.dim() >= 1 and tensor.shape[0] == n


def shard_episode(episode: Episode, rank: int, world: int) -> Episode:
    """The instances ``rank, rank + world, ...`` of a stacked episode, as an episode of their own."""
    n = episode.size
    idx = _share(n, rank, world)
    index = torch.tensor(idx)

    def cut(t: Tensor) -> Tensor:
        return t.index_select(0, index.to(t.device)) if _per_instance(t, n) else t

    params = {k: v.index_select(0, index.to(v.device)) for k, v in episode.params.items()}
    state = {k: {kk: cut(vv) for kk, vv in s.items()} for k, s in episode.state.items()}
    initial = None if episode.initial_loss is None else episode.initial_loss.index_select(0, index)
    return Episode([episode.tasks[i] for i in idx], params, state, episode.step, episode.horizon,
                   [episode.generators[i] for i in idx], episode.index, episode.stacked, initial, episode.device,
                   episode.adapt)


def merge_episodes(shards: list[Episode], tasks: list) -> Episode:
    """Inverse of :func:`shard_episode` over all ranks (``shards[r]`` from rank ``r``)."""
    world, n = len(shards), len(tasks)
    order = [i for r in range(world) for i in _share(n, r, world)]
    inverse = torch.empty(n, dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(n)

    def join(parts: list[Tensor], sizes: list[int]) -> Tensor:
        if all(_per_instance(t, s) for t, s in zip(parts, sizes)):
            return torch.cat(parts).index_select(0, inverse.to(parts[0].device))
        return parts[0]

    sizes = [s.size for s in shards]
    first = shards[0]
    params = {k: join([s.params[k] for s in shards], sizes) for k in first.params}
    state = {k: {kk: join([s.state[k][kk] for s in shards], sizes) for kk in first.state[k]} for k in first.state}
    gens = [None] * n
    for r, s in enumerate(shards):
        for i, g in zip(_share(n, r, world), s.generators):
            gens[i] = g
    initial = None if first.initial_loss is None else join([s.initial_loss for s in shards], sizes)
    return Episode(list(tasks), params, state, first.step, first.horizon, gens, first.index, first.stacked, initial,
                   first.device, first.adapt)


class _ShareUnroll(EpisodeUnroll):
    """ES: evaluates only this rank's antithetic pairs; the other particles' losses are zeros."""

    def __init__(self, *args, pairs: int, rank: int, world: int):
        super().__init__(*args)
        self.pairs, self.mine = pairs, list(pair_share(pairs, rank, world))

    def forward(self, thetas, episodes):
        if len(thetas) != 2 * self.pairs:  # the unperturbed episode: every rank advances it
            return super().forward(thetas, episodes)
        rows = self.mine + [self.pairs + i for i in self.mine]
        losses = torch.zeros(len(thetas), dtype=thetas.dtype, device=thetas.device)
        for i, episode in enumerate(episodes):  # another rank's particles: only their progress
            if i not in rows:
                episode.step += self.steps
        if not rows:
            return losses, True
        mine, finite = super().forward(thetas[rows], [episodes[i] for i in rows])
        losses[rows] = mine.to(losses.dtype)
        return losses, finite


class _RootCheckpointer:
    """Rank 0's checkpointer; on the other ranks loads come by broadcast and saves do nothing."""

    def __init__(self, inner, rank: int):
        self.inner, self.rank = inner, rank

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def load_last(self):
        box = [self.inner.load_last() if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


class DistributedMetaTrainer(MetaTrainer):
    """:class:`MetaTrainer` data-parallel over the ranks of the default process group (module docstring)."""

    def __init__(self, *args, **kwargs):
        if not dist.is_initialized():
            raise ValueError("DistributedMetaTrainer needs a torch.distributed process group (start it with torchrun)")
        self.rank, self._world = dist.get_rank(), dist.get_world_size()
        super().__init__(*args, **kwargs)
        cfg = self.config
        if cfg.estimator == "bptt":
            if cfg.batch_size is None or cfg.batch_size < self._world:
                raise ValueError(f"data-parallel BPTT splits each episode's task batch over the {self._world} "
                                 f"processes: --batch must be at least {self._world}, got {cfg.batch_size}")
        elif cfg.pairs < self._world:
            raise ValueError(f"data-parallel {cfg.estimator.upper()} splits the {cfg.pairs} antithetic pairs over the "
                             f"{self._world} "
                             f"processes: --pairs must be at least {self._world}")
        if self.checkpointer is not None:
            self.checkpointer = _RootCheckpointer(self.checkpointer, self.rank)
        if self.rank != 0:
            self.log = lambda message: None
        with torch.no_grad():  # start from rank 0's weights whatever each rank drew
            for p in self.rule.parameters():
                dist.broadcast(p.data, src=0)
        self._best = self._weights()

    @property
    def world_size(self) -> int:
        return self._world

    @property
    def writes_files(self) -> bool:
        return self.rank == 0

    def _sharded(self) -> bool:
        return self.config.estimator == "bptt"

    def _episode_size(self, episode) -> int:
        return self.config.batch_size if self._sharded() else episode.size

    def _make_unroll(self, steps: int) -> EpisodeUnroll:
        args = (self.rule, self._scratch, self.meta_loss, steps, self.config.second_order)
        if self.config.estimator in ("es", "pes"):
            return _ShareUnroll(*args, pairs=self.config.pairs, rank=self.rank, world=self._world)
        return super()._make_unroll(steps)

    def _reduce(self, grad: Tensor, value: float, finite: bool) -> tuple[Tensor, float, bool]:
        weight = 1.0
        if self._sharded() and self.config.meta_loss == "log_ratio":
            weight = len(_share(self.config.batch_size, self.rank, self._world)) / self.config.batch_size
        packed = torch.cat([grad.detach().reshape(-1).double() * weight,
                            torch.tensor([value * weight, 0.0 if finite else 1.0], dtype=torch.float64,
                                         device=grad.device)])
        dist.all_reduce(packed)
        return packed[:-2].to(grad.dtype), float(packed[-2]), bool(packed[-1] == 0)

    def validate(self) -> float:
        """The one-process mean over the validation episodes, each scored on one rank (``rank,
        rank + world, ...``); inf on every rank when one diverges anywhere."""
        n = self.config.val_episodes
        total, diverged = 0.0, 0.0
        for index in _share(n, self.rank, self._world):
            score = self.validation_score(index)
            if math.isfinite(score):
                total += score
            else:
                diverged = 1.0
        device = next(self.rule.parameters()).device
        packed = torch.tensor([total, diverged], dtype=torch.float64, device=device)
        dist.all_reduce(packed)
        return math.inf if float(packed[1]) > 0 else float(packed[0]) / n

    # -- episodes: a share of the batch in flight, whole episodes in checkpoints ---------------------
    def start_episode(self, index: int, validation: bool = False) -> Episode:
        episode = super().start_episode(index, validation)
        return episode if validation or not self._sharded() else shard_episode(episode, self.rank, self._world)

    def _load_episode(self, tensors, meta, prefix) -> Episode:
        episode = super()._load_episode(tensors, meta, prefix)
        return shard_episode(episode, self.rank, self._world) if self._sharded() else episode

    def _snapshot(self):
        if self.config.estimator == "pes":
            return self._pes_snapshot()
        if not self._sharded():
            return super()._snapshot()
        local = [None if s is None else s.episode.to_tensors("e/") for s in self.groups]
        gathered: list = [None] * self._world
        dist.all_gather_object(gathered, local)
        mine = self.groups
        whole = []
        for i, state in enumerate(mine):
            if state is None:
                whole.append(None)
                continue
            index = int(gathered[0][i][1]["index"])
            tasks, _ = self._episode_tasks(index)
            shards = []
            for r in range(self._world):
                t, m = gathered[r][i]
                shards.append(Episode.from_tensors(_share_list(tasks, r, self._world), t, m, "e/",
                                                   stacked=True, device=state.episode.device,
                                                   adapt=self.config.adapt))
            whole.append(dataclasses.replace(state, episode=merge_episodes(shards, tasks)))
        self.groups = whole
        try:
            return super()._snapshot()
        finally:
            self.groups = mine

    def _pes_snapshot(self):
        owned, gathered = _gathered_particles(self)
        mine, whole = self.groups, []
        for i, state in enumerate(mine):
            if state is None:
                whole.append(None)
                continue
            particles = list(state.particles)
            tasks = None
            for r in range(self._world):
                for j, (t, m) in gathered[r][i].items():
                    if r == self.rank:
                        continue
                    tasks = tasks or self._episode_tasks(int(m["index"]))[0]
                    particles[j] = Episode.from_tensors(tasks, t, m, "p/", stacked=self.config.batch_size is not None,
                                                        device=particles[j].device, adapt=self.config.adapt)
            whole.append(dataclasses.replace(state, particles=particles))
        self.groups = whole
        try:
            return super()._snapshot()
        finally:
            self.groups = mine


def _gathered_particles(trainer: DistributedMetaTrainer):
    pairs = trainer.config.pairs
    owned = [j for i in pair_share(pairs, trainer.rank, trainer._world) for j in (i, pairs + i)]
    local = [None if s is None else {j: s.particles[j].to_tensors("p/") for j in owned} for s in trainer.groups]
    gathered: list = [None] * trainer._world
    dist.all_gather_object(gathered, local)
    return owned, gathered


def _share_list(items: list, rank: int, world: int) -> list:
    return [items[i] for i in _share(len(items), rank, world)]


__all__ = ["DistributedMetaTrainer", "launched", "init_from_env", "on_root", "shard_episode", "merge_episodes"]
