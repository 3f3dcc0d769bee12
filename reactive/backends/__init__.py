"""Event log backends (see :mod:`reactive.log`): ``memory`` for one process, ``redis`` for many."""
