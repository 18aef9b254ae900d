"""Imported by the benchmark's fork server when it starts (its preload list), and by nothing else:
the fork server exits when the sweep's driver process does, even a driver killed with SIGKILL,
instead of sleeping on with its workers (see :func:`l2o.bench.executors.exit_with_parent`)."""

import os

from l2o.bench.executors import DRIVER_ENV, exit_with_parent

# the driver's pid, from the driver: a driver that died while the server was starting is seen
exit_with_parent(int(os.environ[DRIVER_ENV]) if os.environ.get(DRIVER_ENV, "").isdigit() else None)
