"""Events straight into the reactive layer at a set rate, without a write (realtime.py --source log).

Runs in the environment of a BenchServer (its database, Redis and key prefix)
and calls ``reactive.publishing.publish`` as a committed write would: the cache
bump, the log append and the fan-out to every server process. It reads one
JSON step a line from stdin, ``{"tenant", "tags", "rate", "count"}``, publishes
``count`` events on schedule (open loop: a late event is sent at once, never
skipped) and answers one JSON line, ``{"ok", "seconds"}``.

    python bench/publisher.py   # driven by bench/realtime.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "teamhub.settings")
    import django

    django.setup()
    from reactive.publishing import publish

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        step = json.loads(line)
        tenant, tags = step["tenant"], set(step["tags"])
        rate, count = float(step["rate"]), int(step["count"])
        ok = 0
        started = time.perf_counter()
        for i in range(count):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            published = publish({tenant: tags})  # True when published (older: the events)
            ok += int(published) if isinstance(published, bool) else len(published)
        print(json.dumps({"ok": ok, "seconds": time.perf_counter() - started}), flush=True)


if __name__ == "__main__":
    main()
