"""Sub-commands of the ``l2o`` CLI, one module per command group."""
