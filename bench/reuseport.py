"""One uvicorn process on its own SO_REUSEPORT socket (BenchServer starts N of them).

`uvicorn --workers N` shares one listening socket between its workers: the
worker that wakes first accepts a whole burst of connections (asyncio accepts
up to the backlog per wake-up), so long-lived connections opened together pile
up on one worker. With SO_REUSEPORT every process has its own socket on the same
port and the kernel spreads connections over them by a hash of the address.

    python bench/reuseport.py PORT [APP]    (APP: teamhub.asgi:application)
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project: teamhub.asgi


def main() -> None:
    port = int(sys.argv[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(
        sys.argv[2] if len(sys.argv) > 2 else "teamhub.asgi:application",
        log_level="warning",
        access_log=False,
        ws_per_message_deflate=False,  # as BenchServer's uvicorn command line
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
