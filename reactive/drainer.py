"""The drainer: one thread per server process that publishes the change rows others wrote.

A write made anywhere else (another process, a worker, ``psql``, a service in
another language) leaves change rows nobody in this process drains after
commit. The drainer wakes on PostgreSQL's NOTIFY (sent by the triggers), or
polls (``DRAIN_POLL_SECONDS``: on SQLite a short poll, on PostgreSQL a
fallback for a lost notification), and drains with ``SKIP LOCKED``. An idle
drainer sleeps in ``select()`` (PostgreSQL) or runs one indexed query per poll.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING

from django.db import DEFAULT_DB_ALIAS, connections

from . import drain
from .cache import reactive_cache
from .conf import reactive_settings
from .triggers import CHANNEL

if TYPE_CHECKING:  # only PostgreSQL projects have psycopg
    from psycopg import Connection
    from psycopg.rows import TupleRow

    Listener = Connection[TupleRow]

logger = logging.getLogger("reactive")

BACKOFF_MAX = 5.0  # seconds between two attempts while the database or cache fails


class Drainer(threading.Thread):
    """Drains `using`'s change table until :meth:`stop`."""

    def __init__(self, using: str = DEFAULT_DB_ALIAS) -> None:
        super().__init__(name="reactive-drainer", daemon=True)
        self.using = using
        self.stopping = threading.Event()
        self.woken = threading.Event()
        self.drained = 0

    @property
    def poll(self) -> float:
        """Seconds between two drains when nothing wakes the drainer."""
        configured = reactive_settings()["DRAIN_POLL_SECONDS"]
        if configured:
            return float(configured)
        return 2.0 if connections[self.using].vendor == "postgresql" else 0.1

    def wake(self) -> bool:
        """Drain now (rows wait that could not be published: the cache is back)."""
        self.woken.set()
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and wait for the thread; closes its database connections."""
        self.stopping.set()
        self.woken.set()
        if self.is_alive() and connections[self.using].vendor == "postgresql":
            _notify(self.using)  # wakes the listener out of its wait for a notification
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        """Drain, then wait for a notification or the poll, until stopped."""
        listener: Listener | None = None
        delay = self.poll
        # Rows whose publish failed (Redis away) go out as soon as the cache is repaired.
        reactive_cache().after_repair.append(self.wake)
        try:
            while not self.stopping.is_set():
                try:
                    if listener is None and connections[self.using].vendor == "postgresql":
                        listener = _listen(self.using)
                    self.drained += drain.drain(self.using)
                    delay = self.poll
                except Exception:
                    logger.warning("reactive: the drainer failed; retrying", exc_info=True)
                    _close(listener)
                    listener = None
                    connections[self.using].close()
                    delay = min(delay * 2, BACKOFF_MAX)
                self._wait(listener, delay)
        finally:
            reactive_cache().after_repair.remove(self.wake)
            _close(listener)
            connections.close_all()

    def _wait(self, listener: Listener | None, timeout: float) -> None:
        if listener is None:
            self.woken.wait(timeout)
        else:
            # Wake on the first notification (a commit with change rows), or the poll.
            for _ in listener.notifies(timeout=timeout, stop_after=1):
                pass
        self.woken.clear()


def _listen(using: str) -> Listener:
    import psycopg

    conn = connections[using]
    params = conn.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    listener = psycopg.connect(**params, autocommit=True)
    listener.execute(f"LISTEN {CHANNEL}")
    return listener


def _notify(using: str) -> None:
    conn = connections[using]
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"NOTIFY {CHANNEL}")
    except Exception:
        logger.debug("reactive: could not wake the drainer", exc_info=True)
    finally:
        conn.close()


def _close(listener: Listener | None) -> None:
    if listener is not None:
        with contextlib.suppress(Exception):
            listener.close()


_drainer: Drainer | None = None
_pid = 0
_lock = threading.Lock()


def start_drainer(using: str = DEFAULT_DB_ALIAS) -> Drainer:
    """Start this process's drainer (idempotent; again after a fork)."""
    global _drainer, _pid
    with _lock:
        if _drainer is None or _pid != os.getpid() or not _drainer.is_alive():
            _drainer, _pid = Drainer(using), os.getpid()
            _drainer.start()
        return _drainer


def stop_drainer() -> None:
    """Stop this process's drainer, if it runs."""
    global _drainer
    with _lock:
        if _drainer is not None:
            _drainer.stop()
        _drainer = None
