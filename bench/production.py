"""Production settings for a benchmark: DEBUG off (no query log), plain HTTP on 127.0.0.1.

With DEBUG on, Django records every SQL statement on the connection (its debug
cursor), which weighs on write paths that run a few statements each. Call
:func:`production_env` before Django is configured, or before starting a
server (it inherits the environment). Values already set win.
"""

from __future__ import annotations

import os

ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "bench-only-secret-key-not-for-deployment-0123456789abcdef",
    "SECURE_SSL_REDIRECT": "0",  # the benchmark clients speak plain HTTP to 127.0.0.1
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
}


def production_env() -> None:
    """Set DEBUG=0 and what it requires in this process's environment."""
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
