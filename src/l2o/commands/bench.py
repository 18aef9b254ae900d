"""`l2o bench`: run benchmark sweeps into a results file, report them, export them.

    l2o bench run --suite small --optimizers sgd,momentum,adam --seeds 10 --workers 2 --db results.sqlite
    l2o bench report --db results.sqlite --out report/
    l2o bench export --db results.sqlite --out deepobs_json/
    l2o bench list
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmark optimizers: run sweeps, report, export",
                                   description="Benchmark any optimizer on l2o's tasks with a tuning protocol.")
    sub = parser.add_subparsers(dest="bench_command", required=True, metavar="ACTION")

    run = sub.add_parser("run", help="tune and run optimizers on a suite (resumes an interrupted sweep)")
    run.add_argument("--suite", default=None,
                     help="smoke, small, minimax or deepobs_quadratic (see 'l2o bench list')")
    run.add_argument("--tasks", default=None,
                     help="comma-separated task ids (instead of, or to narrow, --suite), or game ids (game_f1, "
                          "mog1d, ...: played by two-player optimizers); a task or game of your own as "
                          "package.module:name (an l2o.tasks.Task or l2o.minimax.Game, or a function returning one)")
    run.add_argument("--optimizers", default=None,
                     help="comma-separated names: sgd, momentum, nag, rmsprop, adam, l2o.optim names, shipped "
                          "learned optimizers, learned:PATH for weights from 'l2o meta train', package.module:Class, "
                          "tuned:NAME for a learned or self-tuning optimizer "
                          "with its step multiplier tuned, or NAME@adapt=KAPPA for a learned optimizer with its "
                          "per-tensor step-size adaptation on; for games: gda, extragradient, ogda, ftr, each also "
                          "as NAME+rmsprop or NAME+adam (default: the suite's)")
    run.add_argument("--grid", action="append", default=[], metavar="SPEC",
                     help="a hyperparameter grid, e.g. 'adam:lr=logspace(1e-5,1e2,36);betas=[(0.9,0.999)]' "
                          "(repeatable; replaces the default learning-rate grid of that optimizer, which must be "
                          "one of the optimizers run: a grid for any other is refused, it adds no optimizer)")
    run.add_argument("--grid-file", default=None,
                     help="grids from a .toml or .yaml file (a table per optimizer); tables of optimizers that "
                          "are not run are left unused, and named on stderr")
    run.add_argument("--protocol", default=None, choices=["smoke", "quick", "deepobs"],
                     help="default learning-rate grid: smoke (4 values), quick (11, 1e-4..10), "
                          "deepobs (36, 1e-5..1e2)")
    run.add_argument("--tune-seeds", type=int, default=None, help="seeds per tuning trial (>= 1; default: the suite's)")
    run.add_argument("--seeds", type=int, default=None,
                     help="seeds for the rerun of the chosen setting (>= 1; default: the suite's)")
    run.add_argument("--workers", type=int, default=1,
                     help="worker processes (default 1); with --executor ray and no --ray-address, the CPUs of the "
                          "local Ray instance")
    run.add_argument("--executor", choices=["process", "ray"], default="process",
                     help="process: local worker processes (default); ray: each run a Ray task (pip install "
                          "'l2o[ray]'), the results file written by this process alone")
    run.add_argument("--ray-address", default=None, metavar="ADDRESS",
                     help="with --executor ray: the cluster to join (e.g. 10.0.0.1:6379, or auto); "
                          "default: start a local Ray instance and shut it down at the end")
    run.add_argument("--db", default="l2o_bench.sqlite",
                     help="results file (SQLite; created if missing, in a directory that must exist)")
    run.add_argument("--noise-scale", action="store_true",
                     help="also measure the gradient noise scale B_simple at the end of every run (tasks with a "
                          "training set; a column of the report)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=_run)

    report = sub.add_parser("report", help="write a Markdown summary, PNG figures and their data")
    report.add_argument("--db", default="l2o_bench.sqlite", help="results file")
    report.add_argument("--out", default="bench_report", help="output directory")
    report.add_argument("--title", default="l2o benchmark")
    report.set_defaults(func=_report)

    export = sub.add_parser("export", help="export the final runs as DeepOBS-style JSON")
    export.add_argument("--db", default="l2o_bench.sqlite", help="results file")
    export.add_argument("--out", default="bench_deepobs", help="output directory")
    export.set_defaults(func=_export)

    lst = sub.add_parser("list", help="list suites, task ids and optimizer names")
    lst.set_defaults(func=_list)


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _run(args) -> int:
    import torch

    from l2o.bench import grids
    from l2o.bench.optimizers import resolve as resolve_optimizer
    from l2o.bench.runner import Plan, WorkerCrashed, run_benchmark
    from l2o.bench.suites import get_preset, get_suite, suite_tasks

    torch.set_num_threads(1)
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    for flag in ("seeds", "tune_seeds"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.ray_address and args.executor != "ray":
        raise ValueError("--ray-address applies to --executor ray only")
    _check_db_path(args.db)
    if args.suite is None and args.tasks is None:
        raise ValueError("give --suite NAME or --tasks id,id,... (see 'l2o bench list')")
    suite = get_suite(args.suite) if args.suite else None
    tasks = _split(args.tasks) if args.tasks else suite_tasks(args.suite)
    for task_id in tasks:
        get_preset(task_id)
    optimizers = _split(args.optimizers) or list(suite.optimizers if suite else ("sgd", "momentum", "adam"))
    grid_map = grids.load_grid_file(args.grid_file) if args.grid_file else {}
    unused = sorted(name for name in grid_map if name not in optimizers)
    if unused:
        print(f"l2o bench: grid file {args.grid_file}: no grid used for {', '.join(unused)} (not among the "
              f"optimizers run: {', '.join(optimizers)})", file=sys.stderr)
        grid_map = {name: grid for name, grid in grid_map.items() if name in optimizers}
    for spec in args.grid:
        name, grid = grids.parse_grid_spec(spec)
        if name not in optimizers:
            raise ValueError(f"--grid gives a grid for {name!r}, which is not among the optimizers run "
                             f"({', '.join(optimizers)}): add it to --optimizers, or drop the grid")
        grid_map[name] = grid
    for name in optimizers:  # unknown names fail here, before the plan is announced
        resolve_optimizer(name)
    plan = Plan(tasks=tasks, optimizers=optimizers, grids=grid_map,
                protocol=args.protocol or (suite.protocol if suite else "quick"),
                tune_seeds=args.tune_seeds if args.tune_seeds is not None else (suite.tune_seeds if suite else 1),
                seeds=args.seeds if args.seeds is not None else (suite.seeds if suite else 10),
                noise_scale=args.noise_scale)
    where = f"Ray ({args.ray_address or 'local instance'})" if args.executor == "ray" else \
        f"{args.workers} worker process{'es' if args.workers != 1 else ''}"
    print(f"l2o bench: {len(plan.tasks)} tasks x {len(plan.optimizers)} optimizers, protocol {plan.protocol}, "
          f"{plan.tune_seeds} tuning seed(s), {plan.seeds} final seeds, {where} -> {args.db}", file=sys.stderr)
    try:
        with _sigterm_stops():
            totals = run_benchmark(plan, args.db, workers=args.workers, progress=not args.no_progress,
                                   executor=args.executor, ray_address=args.ray_address)
    except WorkerCrashed as exc:
        print(f"l2o: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (see _sigterm_stops)
        what = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        stored = _stored_runs(args.db)
        print(f"l2o bench: stopped by {what}; {stored} finished runs are stored in {args.db} (runs in flight "
              f"are lost). To resume, run the same command again: finished runs are kept, the rest run.",
              file=sys.stderr)
        # The process pool's manager thread can be left waiting on a worker killed mid-start;
        # joining it at interpreter exit then never returns (CPython's open issue 83386, a hang at
        # exit after ProcessPoolExecutor.shutdown(wait=False)). Everything is stored: the command
        # may end at once (not on Ray, whose local instance is shut down by exit handlers).
        args.end_at_once = args.executor == "process"
        return 143 if isinstance(exc, Terminated) else 130
    for phase, c in totals.items():
        reused = []
        if c.reused_from_tuning:
            reused.append(f"{c.reused_from_tuning} reused from this sweep's tuning runs (the chosen setting's "
                          "tuning seeds)")
        if c.stored_before:
            reused.append(f"{c.stored_before} already in {args.db} from an earlier run of this sweep")
        print(f"{phase}: {c.done} run{'s' if c.done != 1 else ''} done ({c.diverged} diverged, {c.failed} failed)"
              + (f"; {'; '.join(reused)}" if reused else ""))
    failed = sum(c.failed for c in totals.values())
    if failed:
        print(f"{failed} run(s) failed (an exception, recorded with its message in the results file); "
              "running the same command again retries them")
    print(f"results: {args.db}\nnext: l2o bench report --db {args.db} --out bench_report")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, ``kill``): stops a sweep exactly as Ctrl-C does."""


class _sigterm_stops:
    """While active, SIGTERM raises :class:`Terminated` in the main thread (the default action would
    end the process without stopping its workers)."""

    def __enter__(self):
        import signal

        def handler(signum, frame):
            raise Terminated()

        try:
            self._old = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread: leave SIGTERM alone
            self._old = None
        return self

    def __exit__(self, *exc):
        import signal

        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False


def _check_db_path(db: str) -> None:
    from pathlib import Path

    path = Path(db)
    if path.is_dir():
        raise ValueError(f"--db {db} is a directory; give a results file, e.g. {path / 'results.sqlite'}")
    if not path.parent.is_dir():
        raise ValueError(f"--db {db}: directory {path.parent} does not exist (create it first: "
                         f"mkdir -p {path.parent})")


def _stored_runs(db: str) -> int:
    from l2o.bench.store import ResultsStore

    try:
        with ResultsStore(db) as store:
            return len(store.finished_keys())
    except Exception:
        return 0


def _report(args) -> int:
    from pathlib import Path

    from l2o.bench.report import make_report

    if not Path(args.db).is_file():
        raise FileNotFoundError(f"results file not found: {args.db}")
    summary = make_report(args.db, args.out, title=args.title)
    files = sorted(p.name for p in summary.parent.iterdir() if p.is_file())
    print(f"report written to {summary.parent}/: {', '.join(files)}")
    print(f"start with {summary}")
    return 0


def _export(args) -> int:
    from pathlib import Path

    from l2o.bench.deepobs import export_deepobs

    if not Path(args.db).is_file():
        raise FileNotFoundError(f"results file not found: {args.db}")
    paths = export_deepobs(args.db, args.out)
    print(f"wrote {len(paths)} DeepOBS-style JSON files under {args.out}")
    return 0


def _list(args) -> int:
    from l2o.bench import optimizers
    from l2o.bench.suites import SUITES, available_game_ids, available_task_ids

    print("suites:")
    for name, suite in SUITES.items():
        print(f"  {name}: {suite.description} [{', '.join(suite.tasks)}]")
    games = available_game_ids()
    print("tasks: " + ", ".join(t for t in available_task_ids() if t not in games))
    print("games (two-player optimizers only): " + ", ".join(games))
    print("tasks (your own): package.module:name, an l2o.tasks.Task or l2o.minimax.Game, or a function returning "
          "one (its own budget and metric)")
    for kind, names in optimizers.available().items():
        print(f"optimizers ({kind}): " + (", ".join(names) or "(none)"))
    print("optimizers (any class): package.module:Class")
    print("optimizers (your own learned weights): learned:PATH, e.g. learned:run/weights.safetensors from 'l2o meta train'")
    print("tuned:NAME  a learned or self-tuning optimizer with its step multiplier (lr) tuned, "
          "beside its untuned row")
    print("NAME@adapt=KAPPA  a learned optimizer with LearnedOptimizer(adapt=KAPPA), e.g. mlp-general@adapt=0.3")
    return 0
