"""The fault and abuse report: counts the tests record, printed at the end of a run.

A test calls ``record("redis outage", faults=1, requests=420, errors=0, lost=0)``;
``conftest.pytest_terminal_summary`` prints one row per section, so CI output
holds the numbers issue notes quote.
"""

from __future__ import annotations

from collections import Counter, defaultdict

COLUMNS = ("faults", "requests", "events", "errors", "lost")

sections: dict[str, Counter] = defaultdict(Counter)


def record(section: str, **counts: int) -> None:
    """Add `counts` (faults injected, requests made, events, errors seen, events lost) to `section`."""
    unknown = set(counts) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown report columns: {sorted(unknown)}")
    sections[section].update(counts)


def lines() -> list[str]:
    """The report as a Markdown table, or nothing when no test recorded anything."""
    if not sections:
        return []
    out = ["| section | " + " | ".join(COLUMNS) + " |", "|---" + "|---:" * len(COLUMNS) + "|"]
    for name in sorted(sections):
        row = sections[name]
        out.append(f"| {name} | " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    return out
