"""Imported by the benchmark's fork server when it starts (its preload list), and by nothing else:
the fork server exits when the sweep's driver process does, even a driver killed with SIGKILL,
instead of sleeping on with its workers (see :func:`l2o.bench.executors.exit_with_parent`)."""

from l2o.bench.executors import exit_with_parent

exit_with_parent()
