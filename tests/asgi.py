"""ASGI scopes for tests that call an ASGI application directly."""

from __future__ import annotations


def http_scope(method: str, path: str, query: bytes = b"", headers=()) -> dict:
    """An HTTP scope as uvicorn builds it, for host testserver (in ALLOWED_HOSTS)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
