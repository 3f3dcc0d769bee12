"""Plots of one benchmark run, drawn from the JSON the benchmarks wrote (`--json`).

Reads every ``*.json`` under `--results` (bench/results by default) and writes
the PNGs it has the numbers for under `--out` (docs/ by default):

- bench-realtime-latency.png: write-to-client p50/p99 against connected
  clients per transport, and the latency distribution (CDF) of every delivery
- bench-scaling.png: read requests/s and real-time latency against workers
- bench-servers.png: uvicorn against daphne at one process, reads and real time
- bench-sustained.png: events/s delivered per client against the offered rate

`--report` appends a section linking them to docs/benchmarks.md. Needs
matplotlib (`pip install -e ".[bench]"`).

    python bench/plot.py [--results bench/results] [--out docs] [--report]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPORT, ROOT, append_report  # noqa: E402

COLORS = {"sse": "tab:blue", "ws": "tab:orange"}
SERVER_COLORS = {"uvicorn": "tab:green", "uvicorn-reuseport": "tab:olive", "daphne": "tab:purple"}
ENDPOINTS = ["minimal view", "rx hit, Bearer", "REST route (cached)", "rx miss", "plain ORM view"]


def shipped_reads(rows: list[dict]) -> list[dict]:
    """bench/reads.py's rows with the fast lane on (older runs: no lane, "rx hit" for the hit)."""
    rename = {"rx hit": "rx hit, Bearer"}
    ok = (r for r in rows if r.get("lane", "on") == "on")
    return [{**r, "endpoint": rename.get(r["endpoint"], r["endpoint"])} for r in ok]


def log_axes(ax, x: bool = True, y: bool = True) -> None:
    """Log scales with plain numbers on the ticks (10, 100, 1000 rather than 10^1 ...)."""
    from matplotlib.ticker import LogFormatter, NullFormatter

    for on, axis, scale in ((x, ax.xaxis, ax.set_xscale), (y, ax.yaxis, ax.set_yscale)):
        if on:
            scale("log")
            axis.set_major_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
            axis.set_minor_formatter(NullFormatter())


def empty(ax, text: str) -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def load(results: Path) -> dict[str, list[dict]]:
    """Rows by benchmark, in file name order (a later row of the same key wins)."""
    rows: dict[str, list[dict]] = {}
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text())
        rows.setdefault(data["bench"], []).extend(data["rows"])
    return rows


def latest(rows: list[dict], **match) -> dict | None:
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return found[-1] if found else None


def realtime_latency(rt: list[dict], out: Path, plt) -> Path | None:
    rows = [r for r in rt if r["mode"] == "latency" and r["server"] == "uvicorn"]
    rows = [r for r in rows if r["workers"] == 1]
    if not rows:
        return None
    kinds = [k for k in ("sse", "ws") if any(r["kind"] == k for r in rows)]
    fig, axes = plt.subplots(1, 1 + len(kinds), figsize=(5.2 * (1 + len(kinds)), 4.2))
    ax = axes[0]
    for kind in kinds:
        clients = sorted({r["clients"] for r in rows if r["kind"] == kind})
        pts = [latest(rows, kind=kind, clients=c) for c in clients]
        ax.plot(clients, [r["p50"] for r in pts], "o-", color=COLORS[kind], label=f"{kind} p50")
        ax.plot(clients, [r["p99"] for r in pts], "s--", color=COLORS[kind], label=f"{kind} p99")
    log_axes(ax)
    ax.set_xlabel("connected clients (one uvicorn process)")
    ax.set_ylabel("write to client (ms)")
    ax.set_title("Latency against clients")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    for ax, kind in zip(axes[1:], kinds, strict=True):
        clients = sorted({r["clients"] for r in rows if r["kind"] == kind})
        cmap = plt.get_cmap("viridis")
        for i, c in enumerate(clients):
            r = latest(rows, kind=kind, clients=c)
            xs = [x for x in r["cdf_ms"] if x is not None]
            ys = [p / 100 for p, x in enumerate(r["cdf_ms"]) if x is not None]
            color = cmap(i / max(1, len(clients) - 1))
            ax.plot(xs, ys, color=color, label=f"{c} clients")
        log_axes(ax, y=False)
        ax.set_xlabel("write to client (ms)")
        ax.set_ylabel("fraction of deliveries")
        ax.set_title(f"{kind.upper()}: latency distribution")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
    return save(fig, out / "bench-realtime-latency.png", plt)


def scaling(reads: list[dict], rt: list[dict], out: Path, plt) -> Path | None:
    multi_reads = any(r["workers"] > 1 for r in reads)
    lat = [r for r in rt if r["mode"] == "latency"]
    multi_rt = [r for r in lat if r["workers"] > 1]
    if not multi_reads and not multi_rt:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    lines = 0
    for server, style in (("uvicorn", "-"), ("uvicorn-reuseport", ":")):
        workers = sorted({r["workers"] for r in reads if r["server"] == server} | {1})
        for i, endpoint in enumerate(ENDPOINTS):
            pts = [(w, pick_read(reads, server, w, endpoint)) for w in workers]
            pts = [(w, r["rps"]) for w, r in pts if r]
            if len(pts) < 2:
                continue
            suffix = " (reuseport)" if server != "uvicorn" else ""
            ax.plot(*zip(*pts, strict=True), "o" + style, color=f"C{i}", label=endpoint + suffix)
            lines += 1
    if lines:
        ax.set_xlabel("uvicorn workers")
        ax.set_ylabel("requests/s")
        ax.set_title("HTTP reads against workers")
        ax.set_xticks(sorted({r["workers"] for r in reads}))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    else:
        empty(ax, "no read results at two worker counts or more")
    ax = axes[1]
    if not multi_rt:
        empty(ax, "no real-time results with more than one worker")
    else:
        clients = max(r["clients"] for r in multi_rt)
        for server, style in (("uvicorn", "-"), ("uvicorn-reuseport", ":")):
            for kind in ("sse", "ws"):
                workers = sorted({r["workers"] for r in multi_rt if r["server"] == server} | {1})
                pts = [(w, pick_rt(lat, server, w, kind, clients)) for w in workers]
                pts = [(w, r) for w, r in pts if r]
                if len(pts) < 2:
                    continue
                suffix = " (reuseport)" if server != "uvicorn" else ""
                ws = [w for w, _ in pts]
                ax.plot(ws, [r["p50"] for _, r in pts], "o" + style, color=COLORS[kind])
                ax.plot(ws, [r["p99"] for _, r in pts], "s" + style, color=COLORS[kind])
                ax.plot([], [], style, color=COLORS[kind], label=f"{kind}{suffix}")
        ax.plot([], [], "ko", label="p50")
        ax.plot([], [], "ks", label="p99")
        ax.set_title(f"Real time, {clients} clients, against workers")
        ax.set_xticks(sorted({r["workers"] for r in multi_rt} | {1}))
        ax.set_xlabel("uvicorn workers")
        ax.set_ylabel("write to client (ms)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, out / "bench-scaling.png", plt)


def pick_read(reads: list[dict], server: str, workers: int, endpoint: str) -> dict | None:
    if server == "uvicorn-reuseport" and workers == 1:
        server = "uvicorn"  # one process either way
    return latest(reads, server=server, workers=workers, endpoint=endpoint)


def pick_rt(lat: list[dict], server: str, workers: int, kind: str, clients: int) -> dict | None:
    if server == "uvicorn-reuseport" and workers == 1:
        server = "uvicorn"
    return latest(lat, server=server, workers=workers, kind=kind, clients=clients)


def servers(reads: list[dict], rt: list[dict], out: Path, plt) -> Path | None:
    pair = ("uvicorn", "daphne")
    has_reads = all(any(r["server"] == s and r["workers"] == 1 for r in reads) for s in pair)
    lat = [r for r in rt if r["mode"] == "latency" and r["workers"] == 1]
    daphne_rt = [r for r in lat if r["server"] == "daphne"]
    if not has_reads and not daphne_rt:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    width = 0.38
    ax = axes[0]
    if has_reads:
        endpoints = [e for e in ENDPOINTS + ["Ninja schema view"]]
        for i, server in enumerate(pair):
            vals = [(latest(reads, server=server, workers=1, endpoint=e) or {}) for e in endpoints]
            xs = [j + (i - 0.5) * width for j in range(len(endpoints))]
            ax.bar(
                xs,
                [v.get("rps", 0) for v in vals],
                width,
                label=server,
                color=SERVER_COLORS[server],
            )
        ax.set_xticks(range(len(endpoints)), endpoints, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("requests/s (1 process)")
        ax.set_title("HTTP reads")
        ax.legend()
    else:
        empty(ax, "no read results for both servers")
    if not daphne_rt:
        empty(axes[1], "no real-time results for daphne")
        empty(axes[2], "")
    else:
        clients = max(r["clients"] for r in daphne_rt)
        groups = [(k, q) for k in ("sse", "ws") for q in ("p50", "p99")]
        for i, server in enumerate(pair):
            vals = [latest(lat, server=server, kind=k, clients=clients) for k, _ in groups]
            xs = [j + (i - 0.5) * width for j in range(len(groups))]
            axes[1].bar(
                xs,
                [v[q] if v else 0 for v, (_, q) in zip(vals, groups, strict=True)],
                width,
                label=server,
                color=SERVER_COLORS[server],
            )
            kib = [latest(lat, server=server, kind=k, clients=clients) for k in ("sse", "ws")]
            axes[2].bar(
                [j + (i - 0.5) * width for j in range(2)],
                [v["kib_per_conn"] if v else 0 for v in kib],
                width,
                label=server,
                color=SERVER_COLORS[server],
            )
        axes[1].set_xticks(range(len(groups)), [f"{k.upper()} {q}" for k, q in groups])
        axes[1].set_ylabel("write to client (ms)")
        axes[1].set_title(f"Real time, {clients} clients")
        axes[1].legend()
        axes[2].set_xticks(range(2), ["SSE", "WS"])
        axes[2].set_ylabel("server KiB per idle connection")
        axes[2].set_title(f"Memory, {clients} clients")
        axes[2].margins(y=0.2)
        axes[2].legend(loc="upper center", ncols=2)
    return save(fig, out / "bench-servers.png", plt)


def sustained(rt: list[dict], out: Path, plt) -> Path | None:
    rows = [r for r in rt if r["mode"] == "sustained"]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.6))
    keys = []
    for r in rows:
        key = (r["source"], r["server"], r["workers"], r["kind"], r["clients"])
        if key not in keys:
            keys.append(key)
    top = max(r["rate"] for r in rows)
    ax.plot([0, top], [0, top], color="0.7", lw=1, label="offered")
    styles = {"http": "-", "log": "--"}
    for source, server, workers, kind, clients in keys:
        pts = [
            r
            for r in rows
            if (r["source"], r["server"], r["workers"], r["kind"], r["clients"])
            == (source, server, workers, kind, clients)
        ]
        label = f"{kind.upper()} {clients} clients, {source}"
        if (server, workers) != ("uvicorn", 1):
            label += f", {server} x{workers}"
        line = ax.plot(
            [r["rate"] for r in pts],
            [r["events_per_s"] for r in pts],
            styles.get(source, "-"),
            color=COLORS[kind],
            alpha=0.5 + 0.5 * (clients == max(k[4] for k in keys)),
            label=label,
        )[0]
        bad = [r for r in pts if not r["sustained"]]
        ax.plot(
            [r["rate"] for r in bad],
            [r["events_per_s"] for r in bad],
            "x",
            color=line.get_color(),
            ms=9,
        )
    ax.plot([], [], "kx", label="not sustained")
    log_axes(ax)
    ax.set_xlabel("offered events/s")
    ax.set_ylabel("events/s delivered to every client")
    ax.set_title("Sustained event rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, out / "bench-sustained.png", plt)


def summary(reads: list[dict], rt: list[dict]) -> str:
    """Tables the plots are drawn from: scale-out and uvicorn against daphne, side by side."""
    out = []
    workers = sorted({r["workers"] for r in reads if r["server"] == "uvicorn"})
    if len(workers) > 1:
        out += [
            "Scale-out, HTTP reads (req/s, `uvicorn --workers N`):",
            "",
            "| endpoint | " + " | ".join(f"{w} worker(s)" for w in workers) + " | "
            f"x{workers[-1]} / x{workers[0]} |",
            "|---|" + "---:|" * (len(workers) + 1),
        ]
        for endpoint in ENDPOINTS + ["Ninja schema view"]:
            vals = [latest(reads, server="uvicorn", workers=w, endpoint=endpoint) for w in workers]
            if not all(vals):
                continue
            out += [
                f"| {endpoint} | "
                + " | ".join(f"{v['rps']:.0f}" for v in vals)
                + f" | {vals[-1]['rps'] / vals[0]['rps']:.2f} |"
            ]
        out += [""]
    lat = [r for r in rt if r["mode"] == "latency"]
    multi = [r for r in lat if r["server"] == "uvicorn" and r["workers"] > 1]
    if multi:
        clients = max(r["clients"] for r in multi)
        workers = sorted({r["workers"] for r in multi} | {1})
        out += [
            f"Scale-out, real time at {clients} clients (write to client p50 / p99 in ms, "
            "`uvicorn --workers N`):",
            "",
            "| transport | " + " | ".join(f"{w} worker(s)" for w in workers) + " |",
            "|---|" + "---:|" * len(workers),
        ]
        for kind in ("sse", "ws"):
            vals = [
                latest(lat, server="uvicorn", workers=w, kind=kind, clients=clients)
                for w in workers
            ]
            cells = [f"{v['p50']:.0f} / {v['p99']:.0f}" if v else "-" for v in vals]
            out += [f"| {kind.upper()} | " + " | ".join(cells) + " |"]
        out += [""]
    pair = ("uvicorn", "daphne")
    rows = []
    for endpoint in ENDPOINTS + ["Ninja schema view"]:
        u, d = (latest(reads, server=s, workers=1, endpoint=endpoint) for s in pair)
        if u and d:
            rows.append((f"{endpoint} (req/s)", u["rps"], d["rps"], "{:.0f}"))
    one = [r for r in lat if r["workers"] == 1]
    daphne = [r for r in one if r["server"] == "daphne"]
    if daphne:
        clients = max(r["clients"] for r in daphne)
        for kind in ("sse", "ws"):
            u, d = (latest(one, server=s, kind=kind, clients=clients) for s in pair)
            if u and d:
                for key, what in (("p50", "p50 (ms)"), ("p99", "p99 (ms)")):
                    rows.append(
                        (f"{kind.upper()} {clients} clients {what}", u[key], d[key], "{:.1f}")
                    )
                rows.append(
                    (
                        f"{kind.upper()} KiB per idle connection",
                        u["kib_per_conn"],
                        d["kib_per_conn"],
                        "{:.0f}",
                    )
                )
    if rows:
        out += [
            "uvicorn against daphne, one process each:",
            "",
            "| measure | uvicorn | daphne | uvicorn / daphne |",
            "|---|---:|---:|---:|",
        ]
        out += [
            f"| {name} | {fmt.format(u)} | {fmt.format(d)} | {u / d if d else float('nan'):.2f} |"
            for name, u, d, fmt in rows
        ]
    return "\n".join(out)


def save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--report", action="store_true", help="link the PNGs from the report")
    args = parser.parse_args()
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit('bench/plot.py needs matplotlib: pip install -e ".[bench]"')
    data = load(Path(args.results))
    if not data:
        sys.exit(f"no results under {args.results}: run the benchmarks with --json first")
    rt, reads = data.get("realtime", []), shipped_reads(data.get("reads", []))
    made = [
        (
            "Write-to-client latency against clients, and its distribution",
            realtime_latency(rt, Path(args.out), plt),
        ),
        (
            "Scale-out: HTTP reads and real-time latency against workers",
            scaling(reads, rt, Path(args.out), plt),
        ),
        ("uvicorn against daphne, one process", servers(reads, rt, Path(args.out), plt)),
        ("Sustained event rate", sustained(rt, Path(args.out), plt)),
    ]
    made = [(title, path) for title, path in made if path]
    if args.report and made:
        report_dir = REPORT.resolve().parent
        body = "\n\n".join(
            f"**{title}**\n\n![{title}]({os.path.relpath(path.resolve(), report_dir)})"
            for title, path in made
        )
        source = os.path.relpath(Path(args.results).resolve(), ROOT)
        append_report(
            "Plots and summary",
            "python bench/plot.py " + " ".join(sys.argv[1:]),
            f"Drawn from the JSON under `{source}` (the raw results of the sections above).\n\n"
            + summary(reads, rt)
            + "\n\n"
            + body,
        )


if __name__ == "__main__":
    main()
