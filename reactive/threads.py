"""The ORM from async code: a thread hop that hands its database connection back.

Long-lived async code (streams, the metrics flush) runs ORM calls on a worker
thread, outside Django's request cycle, which is what closes connections
otherwise. This is Channels' ``database_sync_to_async``, here so that the core
of ``reactive`` (SSE, metrics) needs no Channels; the WebSocket consumer uses
the same one.
"""

from __future__ import annotations

from typing import Any, ParamSpec, TypeVar

from asgiref.sync import SyncToAsync
from django.db import close_old_connections

__all__ = ["database_sync_to_async"]

P = ParamSpec("P")
R = TypeVar("R")


class DatabaseSyncToAsync(SyncToAsync[P, R]):
    """``sync_to_async`` that closes stale connections before and after the call."""

    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the call between two ``close_old_connections()``."""
        close_old_connections()
        try:
            # asgiref leaves thread_handler unannotated.
            return super().thread_handler(loop, *args, **kwargs)  # type: ignore[no-untyped-call]
        finally:
            close_old_connections()


database_sync_to_async = DatabaseSyncToAsync
