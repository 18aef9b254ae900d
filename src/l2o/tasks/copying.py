"""The copying task for recurrent networks (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

An input sequence starts with ``copy_length`` symbols drawn uniformly from ``num_symbols``
letters, then ``delay - 1`` blanks, a marker, and ``copy_length`` more blanks; the target is
blank everywhere except the last ``copy_length`` positions, which must repeat the first
symbols. Sequence length is ``delay + 2 * copy_length``. The network must carry the symbols
across ``delay`` steps: the classic long-term-dependency benchmark, and the one h-detach
(Arpit et al., 2019) reports on with delays 100 to 300.

Vocabulary: 0 is the blank, 1..num_symbols are letters, num_symbols + 1 is the marker.
Outputs are num_symbols + 1 classes (blank and letters).

A memoryless network that predicts blanks and then guesses letters uniformly scores
``copy_length * log(num_symbols) / (delay + 2 * copy_length)`` (the "baseline" loss,
:attr:`CopyingTask.baseline_loss`) and 1/num_symbols accuracy on the copied positions.
With ``loss_on="copy"`` the loss averages only over the copied positions and the baseline is
``log(num_symbols)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from l2o.nn.hdetach import lstm_forward
from l2o.tasks.base import Params, Task

CopyingBatch = tuple[Tensor, Tensor, Tensor]


class CopyingTask(Task):
    """An LSTM (optionally with h-detach) learning the copying task, in functional form.

    Parameters are ``lstm.weight_ih_l0``, ``lstm.weight_hh_l0``, ``lstm.bias_ih_l0``,
    ``lstm.bias_hh_l0`` (``nn.LSTM`` names and initialisation) and ``out.weight``,
    ``out.bias`` (a linear read-out applied at every step). Inputs are one-hot.

    ``batches`` yields ``(inputs, targets, detach_mask)``: integer sequences of shape
    (batch_size, length), and the h-detach decisions for this batch (``length`` booleans,
    Bernoulli(``detach_prob``), drawn from the same generator so runs are reproducible).
    ``loss`` is the mean cross-entropy over every position of every sequence, as in the
    h-detach paper (``loss_on="all"``), or over the ``copy_length`` copied positions only
    (``loss_on="copy"``: the blanks are trivial to predict, and averaging over them scales the
    useful part of the loss by ``copy_length / length``); ``evaluate`` reports that loss and
    the accuracy on the copied positions only, on a fixed held-out set (``"test"``) or a fixed sample of the training
    distribution (``"train"``), both drawn from ``seed``.

    Args:
        delay: blanks between the symbols and the marker (the paper's T). Default 50 keeps a
            benchmark run to seconds on a CPU; the paper uses 100 to 300.
        copy_length: symbols to copy (10 in the paper).
        num_symbols: alphabet size (8 in the paper).
        hidden: LSTM units (128 in the paper; 32 by default here so a benchmark run of the
            default 300 steps takes seconds on one CPU core).
        batch_size: sequences per batch (100 in the paper; 32 by default here, for speed).
        steps: default training budget.
        detach_prob: h-detach probability p (0 gives a plain LSTM).
        eval_size: sequences in each held-out evaluation set.
        seed: seeds the evaluation sets.
        loss_on: ``"all"`` (every position, the paper's loss) or ``"copy"`` (copied positions only).
    """

    name = "copying"
    metric = "test_loss"

    def __init__(self, delay: int = 50, copy_length: int = 10, num_symbols: int = 8, hidden: int = 32,
                 batch_size: int = 32, steps: int = 300, detach_prob: float = 0.0, eval_size: int = 500,
                 seed: int = 0, loss_on: str = "all"):
        if delay < 1:
            raise ValueError(f"delay must be >= 1, got {delay}")
        if copy_length < 1:
            raise ValueError(f"copy_length must be >= 1, got {copy_length}")
        if num_symbols < 2:
            raise ValueError(f"num_symbols must be >= 2, got {num_symbols}")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if eval_size < 1:
            raise ValueError(f"eval_size must be >= 1, got {eval_size}")
        if not 0.0 <= detach_prob <= 1.0:
            raise ValueError(f"detach_prob must be in [0, 1], got {detach_prob}")
        self.delay, self.copy_length, self.num_symbols = int(delay), int(copy_length), int(num_symbols)
        self.hidden, self.batch_size, self.steps = int(hidden), int(batch_size), int(steps)
        if loss_on not in ("all", "copy"):
            raise ValueError(f"loss_on must be 'all' or 'copy', got {loss_on!r}")
        self.detach_prob, self.eval_size, self.seed = float(detach_prob), int(eval_size), int(seed)
        self.loss_on = loss_on
        self.length = self.delay + 2 * self.copy_length
        self.vocab = self.num_symbols + 2
        self.classes = self.num_symbols + 1
        self.marker = self.num_symbols + 1
        g = torch.Generator().manual_seed(self.seed)
        self._eval = {"train": self.sample(self.eval_size, g), "test": self.sample(self.eval_size, g)}

    @property
    def baseline_loss(self) -> float:
        """Loss of the best memoryless predictor: blanks, then uniform guesses."""
        if self.loss_on == "copy":
            return math.log(self.num_symbols)
        return self.copy_length * math.log(self.num_symbols) / self.length

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` sequences: (inputs, targets), integer tensors of shape (n, length)."""
        symbols = torch.randint(1, self.num_symbols + 1, (n, self.copy_length), generator=generator)
        inputs = torch.zeros(n, self.length, dtype=torch.long)
        inputs[:, : self.copy_length] = symbols
        inputs[:, self.copy_length + self.delay - 1] = self.marker
        targets = torch.zeros(n, self.length, dtype=torch.long)
        targets[:, -self.copy_length :] = symbols
        return inputs, targets

    def init_params(self, generator: torch.Generator) -> Params:
        # nn.LSTM / nn.Linear default initialisation, drawn from the generator.
        bound = 1.0 / math.sqrt(self.hidden)
        h4 = 4 * self.hidden

        def uniform(*shape):
            return (torch.rand(*shape, generator=generator) * 2 - 1) * bound

        return {
            "lstm.weight_ih_l0": uniform(h4, self.vocab),
            "lstm.weight_hh_l0": uniform(h4, self.hidden),
            "lstm.bias_ih_l0": uniform(h4),
            "lstm.bias_hh_l0": uniform(h4),
            "out.weight": uniform(self.classes, self.hidden),
            "out.bias": uniform(self.classes),
        }

    def batches(self, generator: torch.Generator) -> Iterator[CopyingBatch]:
        while True:
            inputs, targets = self.sample(self.batch_size, generator)
            mask = torch.rand(self.length, generator=generator) < self.detach_prob
            yield inputs, targets, mask

    def logits(self, params: Params, inputs: Tensor, detach_mask: Tensor | None = None) -> Tensor:
        """Per-step class scores, shape (n, length, classes)."""
        dtype = params["lstm.weight_ih_l0"].dtype
        x = torch.nn.functional.one_hot(inputs.t(), self.vocab).to(dtype)  # (length, n, vocab)
        hidden_states, _ = lstm_forward(params, x, prefix="lstm.", detach_masks=detach_mask)
        out = torch.nn.functional.linear(hidden_states, params["out.weight"], params["out.bias"])
        return out.transpose(0, 1)

    def loss(self, params: Params, batch: CopyingBatch | None) -> Tensor:
        if batch is None:
            inputs, targets = self._eval["train"]
            mask = None
        else:
            inputs, targets, mask = batch
            mask = mask if bool(mask.any()) else None
        return self._cross_entropy(self.logits(params, inputs, mask), targets)

    def _cross_entropy(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.loss_on == "copy":
            logits, targets = logits[:, -self.copy_length :], targets[:, -self.copy_length :]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, self.classes), targets.reshape(-1))

    def evaluate(self, params: Params, split: str = "test") -> dict[str, float]:
        if split not in self._eval:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        inputs, targets = self._eval[split]
        with torch.no_grad():
            logits = self.logits(params, inputs)
            loss = self._cross_entropy(logits, targets)
            copied = slice(self.length - self.copy_length, None)
            accuracy = (logits[:, copied].argmax(-1) == targets[:, copied]).float().mean()
        return {"loss": float(loss), "accuracy": float(accuracy)}

    def describe(self):
        return {**super().describe(), "delay": self.delay, "copy_length": self.copy_length,
                "num_symbols": self.num_symbols, "hidden": self.hidden, "detach_prob": self.detach_prob,
                "loss_on": self.loss_on}
