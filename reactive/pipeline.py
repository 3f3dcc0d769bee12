"""One pipelined Redis connection per event loop, for the fast lane's reads, parsed by hiredis.

Every fast-lane request makes one ``MGET``. A connection pool would check a
connection out and back in around each (a third of the lane's time in
redis-py's asyncio client); Redis answers the commands of one connection in
order, so here every request writes its command on the same connection and
waits for its own reply, which arrives in the order sent. A timeout or a lost
connection fails every command in flight and closes the connection (its replies
could no longer be matched to their commands); the next read opens a new one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis


class Unavailable(ConnectionError):
    """Redis did not answer (refused, lost, timed out) or answered with an error."""


class Connection(asyncio.Protocol):
    """A Redis connection whose commands may be in flight together (pipelined)."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start reading replies."""
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Hand each complete reply to the oldest command waiting for one."""
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            waiter = self.waiting.popleft()
            if not waiter.done():  # its caller may have given up (a client that left)
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail every command in flight."""
        self.fail(Unavailable("the Redis connection was lost"))

    def fail(self, error: Exception) -> None:
        """Close the connection and fail what waits on it."""
        self.lost = True
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    async def command(self, *args: bytes | str) -> Any:
        """Send one command and wait for its reply (Unavailable on failure)."""
        return (await self.commands(args))[0]

    async def commands(self, *commands: tuple[bytes | str, ...]) -> list[Any]:
        """Send commands in one write and wait for their replies (Unavailable on failure)."""
        if self.lost or self.transport is None:
            raise Unavailable("the Redis connection is closed")
        loop = asyncio.get_running_loop()
        waiters = [loop.create_future() for _ in commands]
        self.waiting.extend(waiters)
        self.transport.write(b"".join(_pack(args) for args in commands))
        try:
            # A waiter cancelled by the timeout (or by a caller that left) stays in the queue,
            # done: its reply, when it comes, is skipped, so later replies still match.
            async with asyncio.timeout(self.timeout):
                replies = [await waiter for waiter in waiters]
        except TimeoutError:
            self.fail(Unavailable("Redis did not answer in time"))
            raise Unavailable("Redis did not answer in time") from None
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise Unavailable(str(reply))
        return replies


def _pack(args: tuple[bytes | str, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


async def connect(options: dict[str, Any]) -> Connection:
    """A connection to the server `options` name (redis-py's connection keywords)."""
    loop = asyncio.get_running_loop()
    timeout = options.get("socket_timeout") or 5.0
    connecting = (
        loop.create_unix_connection(lambda: Connection(timeout), options["path"])
        if options.get("path")
        else loop.create_connection(
            lambda: Connection(timeout), options.get("host", "localhost"), options.get("port", 6379)
        )
    )
    try:
        _, connection = await asyncio.wait_for(
            connecting, options.get("socket_connect_timeout") or timeout
        )
    except (OSError, TimeoutError) as exc:
        raise Unavailable(f"cannot connect to Redis: {exc}") from None
    if options.get("password"):
        auth = [options["username"]] if options.get("username") else []
        await connection.command("AUTH", *auth, options["password"])
    if options.get("db"):
        await connection.command("SELECT", str(options["db"]))
    return connection
