"""Live fan-out: events travel the Channels layer once per process, then locally.

Every process runs one listener (started lazily by the first stream) in the
group ``reactive.events``; it dispatches each event to the connections of that
process that follow the event's tenant. The cost of one event on the layer is
one message per process, whatever the number of connections.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from .events import Event

GROUP = "reactive.events"


def broadcast(event: Event) -> None:
    """Send a committed event to every process's listener."""
    layer = get_channel_layer()
    if layer is None:
        return
    async_to_sync(layer.group_send)(GROUP, {"type": "reactive.event", "event": event.as_dict()})
