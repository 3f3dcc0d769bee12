"""The raw ASGI floor of bench/reads.py: no Django, the same body as agents.getAll.

Answers every HTTP request with 200 and the bytes of the file
``BENCH_BODY_FILE``: what the ASGI server itself costs for the response.

    BENCH_BODY_FILE=body.json uvicorn bench.rawasgi:application
"""

from __future__ import annotations

import os
from pathlib import Path

BODY = Path(os.environ["BENCH_BODY_FILE"]).read_bytes()
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
}
RESPONSE = {"type": "http.response.body", "body": BODY}


async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send(START)
    await send(RESPONSE)
