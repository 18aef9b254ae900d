"""Export runs as DeepOBS-style JSON files, so published DeepOBS baselines can be overlaid.

Layout, as DeepOBS writes its results::

    OUT/<testproblem>/<optimizer>/<hyperparameters>/random_seed__<seed>.json

Each file holds DeepOBS's keys: ``testproblem``, ``optimizer_name``, ``batch_size``,
``num_epochs``, ``random_seed``, ``learning_rate``, ``optimizer_hyperparams`` and the curves
``test_losses``/``test_accuracies`` (our test evaluations, at ``eval_steps``) and
``train_losses`` (the minibatch training loss at those steps, averaged over the steps since the
previous evaluation: DeepOBS evaluates on a separate pass over the training set instead).
Only the final (selected) runs of each sweep are exported; games (``l2o.minimax``), which DeepOBS
does not have, are not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from l2o.bench.store import ResultsStore, canonical_json


def _dirname(name: str) -> str:
    """``name`` as one directory name on any system: a task or optimizer given as a module path
    (``pkg.mod:name``) or a weights path (``learned:run/w.safetensors``) keeps no ``:`` or ``/``."""
    return re.sub(r"[^A-Za-z0-9._@=+-]", "_", name)


def _hp_dirname(hparams: dict) -> str:
    if not hparams:
        return "defaults"
    return "__".join(f"{k}__{v:.4g}" if isinstance(v, float) else f"{k}__{v}" for k, v in sorted(hparams.items()))


def export_deepobs(db_path: str, out_dir: str) -> list[Path]:
    """Write one DeepOBS-style JSON per final run of every selection; returns the paths."""
    out = Path(out_dir)
    written = []
    with ResultsStore(db_path) as store:
        for sel in store.selections():
            hp = canonical_json(sel["hparams"])
            for row in store.runs(task=sel["task"], optimizer=sel["optimizer"]):
                if canonical_json(row["hparams"]) != hp or row["seed"] not in sel["final_seeds"] \
                        or row["status"] == "failed" or row["task_config"].get("game"):
                    continue
                curves = store.curves(row["id"])
                eval_steps, test_losses = curves.get("test_loss", ([], []))
                losses = np.asarray(curves.get("train_loss", ([], []))[1], dtype=float)
                train_losses, previous = [], 0
                for step in eval_steps:
                    window = losses[previous:step] if step > previous else losses[max(0, step - 1):step]
                    train_losses.append(float(window.mean()) if window.size else None)
                    previous = step
                config = row["task_config"]
                batch_size = config.get("kwargs", {}).get("batch_size", 128)
                payload = {
                    "testproblem": sel["task"], "optimizer_name": sel["optimizer"],
                    "batch_size": batch_size, "num_epochs": config.get("kwargs", {}).get("epochs"),
                    "num_steps": row["steps"], "random_seed": row["seed"],
                    "learning_rate": sel["hparams"].get("lr"), "optimizer_hyperparams": sel["hparams"],
                    "tuned": sel["tuned"], "status": row["status"], "eval_steps": eval_steps,
                    "train_losses": train_losses, "test_losses": test_losses,
                    "test_accuracies": curves.get("test_accuracy", ([], []))[1],
                    "l2o_versions": row["versions"],
                }
                path = out / _dirname(sel["task"]) / _dirname(sel["optimizer"]) / _hp_dirname(sel["hparams"]) / \
                    f"random_seed__{row['seed']}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(payload, indent=1, default=str))
                written.append(path)
    return written
