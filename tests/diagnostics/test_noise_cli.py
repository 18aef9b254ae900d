"""`l2o noise`: a short run on digits, a task of one's own by module path, and bad input."""

from l2o.cli import main

OWN_TASK = '''
import torch
from l2o.tasks import Task


class Regression(Task):
    """A linear regression whose batches are (inputs, targets) and which has no x_train."""

    name = "own_regression"
    steps = 10
    batch_size = 16

    def __init__(self, n=64):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(n, generator=g)

    def init_params(self, generator):
        return {"w": torch.zeros(3)}

    def loss(self, params, batch):
        x, y = batch if batch is not None else (self.x, self.y)
        return 0.5 * ((x @ params["w"] - y) ** 2).mean()

    def batches(self, generator):
        while True:
            idx = torch.randint(0, self.x.shape[0], (self.batch_size,), generator=generator)
            yield self.x[idx], self.y[idx]


def make(n=64):
    return Regression(n)
'''


def test_noise_on_digits_prints_measurements_and_writes_json_and_png(tmp_path, capsys, strict_json):
    out = tmp_path / "run"
    assert main(["noise", "--task", "digits_mlp", "--steps", "6", "--every", "3", "--no-progress",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("B_simple") >= 3 and "advice" in printed and "assumptions" in printed
    report = strict_json((out / "noise.json").read_text())
    assert [row["step"] for row in report["measurements"]] == [0, 3, 6]
    assert all(row["method"] == "exact" and row["examples"] == 1348 for row in report["measurements"])
    assert report["advice"]["batch_size"] == 128 and report["advice"]["dataset_size"] == 1348
    assert (out / "noise.png").stat().st_size > 10_000


def test_noise_on_a_task_of_ones_own_by_module_path(tmp_path, monkeypatch, capsys, strict_json):
    (tmp_path / "my_noise_task.py").write_text(OWN_TASK)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["noise", "--task", "my_noise_task:make", "--task-arg", "n=80", "--method", "two_batch",
                 "--examples", "64", "--steps", "4", "--every", "2", "--optimizer", "momentum", "--lr", "0.05",
                 "--no-progress", "--out", "own"]) == 0
    report = strict_json((tmp_path / "own" / "noise.json").read_text())
    assert report["task"]["name"] == "own_regression"
    assert [row["step"] for row in report["measurements"]] == [0, 2, 4]
    assert all(row["method"] == "two_batch" and row["batch_sizes"] == [16, 64] for row in report["measurements"])
    assert "advice" not in report  # no training-set size to advise with: the task has no x_train


def test_noise_refuses_bad_input_with_one_line(tmp_path, capsys):
    assert main(["noise", "--task", "quadratic", "--steps", "2", "--no-progress", "--out", str(tmp_path)]) == 2
    assert "does not yield (inputs, targets)" in capsys.readouterr().err
    assert main(["noise", "--task", "digits_mlp", "--steps", "0", "--no-progress", "--out", str(tmp_path)]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
    assert main(["noise", "--task", "digits_mlp", "--examples", "1", "--no-progress", "--out", str(tmp_path)]) == 2
    assert "--examples must be >= 2" in capsys.readouterr().err
    assert main(["noise", "--task", "no_such_task", "--no-progress", "--out", str(tmp_path)]) == 2
    assert "unknown task" in capsys.readouterr().err
