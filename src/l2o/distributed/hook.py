"""The DDP communication hook: compressed SGD / DORE across real processes.

Usage (every rank)::

    ddp = DistributedDataParallel(model)
    state = CompressionState(make_algorithm("dore"), ddp.module, seed=0)
    ddp.register_comm_hook(state, compression_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=gamma)     # plain SGD: no momentum, no decay

**Server placement: rank 0 serves.** DDP has no server, so one is needed. Rank 0 is worker 0
*and* the server: per bucket, every rank sends its packed message to rank 0 (``gather``),
rank 0 decodes, runs the server step and ``broadcast``\\ s its packed reply. This keeps the
server's state (h, e) in one place and puts the *compressed* model residual on the wire, as
the paper's master-worker design does. (Replicating the server on every rank would need an
``all_gather`` of every worker's message to every rank, K−1 uploads' worth of traffic per rank
instead of one reply, and would leave the downlink compression nothing to save.)

Conventions follow torch's PowerSGD hook: the state object holds the process group and a step
counter advanced on the last bucket (``bucket.is_last()``; and, should DDP not call the hook
for a last bucket holding only empty parameters, when a parameter comes round again), the hook returns a future holding
the bucket's new contents. States are kept **per parameter** (not per bucket), and random
draws are seeded per (seed, step, rank, parameter), so DDP's rebuilding of buckets after the
first iteration changes nothing (PowerSGD needs ``start_powerSGD_iter > 1`` for this reason;
this hook compresses from the first step). Parameters without elements are skipped and a
bucket with nothing to send calls no collective (gloo fails on empty tensors).

Bytes on the wire are counted per step on every rank (``state.bytes_up``/``bytes_down``,
``state.history``): the packed tensors that cross, never dequantized floats.
"""


import torch
import torch.distributed as dist

from .algorithms import SERVER_ROLE, Algorithm, generator_for

__all__ = ["CompressionState", "compression_hook", "CollectiveError"]


class CollectiveError(RuntimeError):
    """A collective of the compression hook failed (a worker died, or the group timed out)."""


class CompressionState:
    """What :func:`compression_hook` needs on one rank.

    ``module`` is the wrapped model (``ddp.module``) whose parameter order numbers the states;
    ``seed`` must be the same on every rank (it seeds the compressors' random draws).
    """

    def __init__(self, algorithm: Algorithm, module: torch.nn.Module, *, seed: int = 0, process_group=None):
        if not dist.is_initialized():
            raise ValueError("torch.distributed is not initialized: call init_process_group first")
        self.algorithm = algorithm
        self.process_group = process_group
        self.rank = dist.get_rank(process_group)
        self.world_size = dist.get_world_size(process_group)
        self.seed = int(seed)
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.index = {p.data_ptr(): i for i, p in enumerate(self.params) if p.numel() > 0}
        self.worker = {}
        self.server = {}
        self.step = 0
        self.bytes_up = 0      # this rank's uploads (and, on rank 0, nothing for its own copy)
        self.bytes_down = 0    # the server's replies this rank received
        self.history: list[dict] = []
        self._step_bytes = {"up": 0, "down": 0}
        self._seen: set[int] = set()  # parameter indices handled in the current step
        self.collective_sizes: list[tuple[str, int]] = []

    def _index_of(self, p: torch.Tensor) -> int:
        try:
            return self.index[p.data_ptr()]
        except KeyError:
            raise ValueError("a bucket holds a parameter the state does not know: build CompressionState "
                             "from ddp.module after wrapping, with the same requires_grad settings") from None

    def _collective(self, what: str, fn, tensor: torch.Tensor):
        if tensor.numel() == 0:  # never reached: buckets with nothing to send return early
            raise CollectiveError(f"l2o.distributed: refusing {what} on an empty tensor")
        self.collective_sizes.append((what, tensor.numel()))
        try:
            fn()
        except Exception as exc:
            raise CollectiveError(
                f"l2o.distributed: {what} failed on rank {self.rank} at step {self.step} "
                f"(world size {self.world_size}): a worker died or the group timed out ({exc})") from exc


def compression_hook(state: CompressionState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: encode this rank's gradients, let rank 0 serve, write the decoded
    direction into the bucket (``x ← x − lr·d`` is then the optimizer's ordinary SGD step)."""
    alg = state.algorithm
    buffer = bucket.buffer()
    if buffer.device.type != "cpu":
        raise ValueError(f"compression_hook runs on CPU tensors (gloo); this bucket is on {buffer.device}: "
                         "GPU buckets (nccl) are not supported yet")
    entries = []  # (parameter index or None, numel, dtype)
    params = bucket.parameters()
    # the bucket's flat buffer is its parameters' gradients laid end to end (read it, not
    # bucket.gradients(), which need not be views of the buffer)
    grads = torch.split(buffer, [p.numel() for p in params]) if params else []
    if sum(p.numel() for p in params) != buffer.numel():
        raise RuntimeError(f"bucket of {buffer.numel()} elements but parameters of {sum(p.numel() for p in params)}: "
                           "sparse gradients are not supported")
    for p, g in zip(params, grads):
        entries.append((state._index_of(p) if g.numel() > 0 else None, g))
    live = [(i, g) for i, g in entries if i is not None]
    if any(i in state._seen for i, _ in live):
        _close_step(state)  # a new iteration whose previous last bucket never reached the hook
    state._seen.update(i for i, _ in live)
    fut = torch.futures.Future()
    if not live:
        fut.set_result(buffer)
        _advance(state, bucket)
        return fut
    payloads = []
    for i, g in live:
        if i not in state.worker:
            state.worker[i] = alg.init_worker(g.numel(), g.dtype)
        payloads.append(alg.worker_encode(state.worker[i], g.detach().reshape(-1),
                                          generator_for(state.seed, state.step, state.rank, i)))
    message = torch.cat(payloads)
    group = state.process_group
    if state.rank == 0:
        gathered = [torch.empty_like(message) for _ in range(state.world_size)]
        state._collective("gather", lambda: dist.gather(message, gathered, dst=0, group=group), message)
        sizes = [p.numel() for p in payloads]
        per_rank = [list(torch.split(m, sizes)) for m in gathered]
        replies = []
        for j, (i, g) in enumerate(live):
            if i not in state.server:
                state.server[i] = alg.init_server(g.numel(), g.dtype)
            replies.append(alg.server_step(state.server[i], [per_rank[r][j] for r in range(state.world_size)],
                                           g.numel(), g.dtype, generator_for(state.seed, state.step, SERVER_ROLE, i)))
        reply = torch.cat(replies)
    else:
        state._collective("gather", lambda: dist.gather(message, None, dst=0, group=group), message)
        reply = torch.empty(sum(alg.downlink.nbytes(g.numel(), g.dtype) for _, g in live), dtype=torch.uint8)
    state._collective("broadcast", lambda: dist.broadcast(reply, src=0, group=group), reply)
    state._step_bytes["up"] += message.numel()
    state._step_bytes["down"] += reply.numel()
    state.bytes_up += message.numel()
    state.bytes_down += reply.numel()
    pieces, offset = [], 0
    for i, g in entries:
        if i is None:
            pieces.append(g.new_zeros(0))
            continue
        size = alg.downlink.nbytes(g.numel(), g.dtype)
        pieces.append(alg.worker_decode(state.worker[i], reply[offset:offset + size], g.numel(), g.dtype))
        offset += size
    flat = torch.cat(pieces)
    buffer.copy_(flat.to(buffer.dtype))
    fut.set_result(buffer)
    _advance(state, bucket)
    return fut


def _advance(state: CompressionState, bucket) -> None:
    if bucket.is_last():
        _close_step(state)


def _close_step(state: CompressionState) -> None:
    state.history.append({"step": state.step, "bytes_up": state._step_bytes["up"],
                          "bytes_down": state._step_bytes["down"]})
    state._step_bytes = {"up": 0, "down": 0}
    state._seen = set()
    state.step += 1
