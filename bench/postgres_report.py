"""The Markdown section of the PostgreSQL rows (bench/postgres.py) in docs/benchmarks.md."""

from __future__ import annotations

import datetime as dt
import statistics

SECTION = "## PostgreSQL"


def _spread(values: list[float], fmt: str) -> str:
    """The runs' figure, or their range where they differ as written."""
    shown = sorted({format(v, fmt): v for v in values if v is not None}.items(), key=lambda kv: kv[1])
    if not shown:
        return "-"
    return shown[0][0] if len(shown) == 1 else f"{shown[0][0]}-{shown[-1][0]}"


def _where_it_goes(w: list[dict]) -> list[str]:
    """A sentence per kind of write: the CPU a write costs on each store, the database's included."""

    def median(key: str, figure: str) -> float | None:
        values = [run[key][figure] for run in w if figure in run.get(key, {})]
        return statistics.median(values) if values else None

    out = []
    for mode, what in (("put", "A single write"), ("batch", "A write in a `_batch`")):
        sq, inst, db = (
            median(f"sqlite_{mode}", "cpu_us_per_write"),
            median(f"pg_{mode}", "cpu_us_per_write"),
            median(f"pg_{mode}", "postgres_us_per_write"),
        )
        if None in (sq, inst, db):
            continue
        out.append(
            f"{what} costs {sq:,.0f} us of CPU with SQLite (the instance, its database inside it) and "
            f"{inst + db:,.0f} us with PostgreSQL ({inst:,.0f} us in the instance, {db:,.0f} us in "
            f"PostgreSQL's processes), medians of the runs: {(inst + db) / sq:.1f}x, on the same cores."
        )
    return out


def goals(res: dict) -> list[str]:
    """The issue's goals against this run: the worst of the runs for each."""
    out = ["| goal | this run (worst of the runs) | |", "|---|---|---|"]

    def line(goal: str, shown: str | None, met: bool | None) -> None:
        verdict = "-" if met is None else ("met" if met else "**not met**")
        out.append(f"| {goal} | {shown or 'not run'} | {verdict} |")

    for mode, goal, want in (
        ("put", "single writes >= 60% of SQLite's", 0.6),
        ("batch", "`_batch` >= 50%", 0.5),
    ):
        ratios = [
            run[f"pg_{mode}"]["writes_per_s"] / run[f"sqlite_{mode}"]["writes_per_s"]
            for run in res.get("writes", [])
            if run.get(f"pg_{mode}", {}).get("writes_per_s")
            and run.get(f"sqlite_{mode}", {}).get("writes_per_s")
        ]
        line(goal, f"{min(ratios):.0%}" if ratios else None, min(ratios) >= want if ratios else None)
    p99 = [run["other"]["p99_ms"] for run in res.get("cross", [])]
    line(
        "write on one instance, watch on another: p99 <= 50 ms at 200 writes/s, 1,000 watchers over 3",
        f"{max(p99):.0f} ms" if p99 else None,
        max(p99) <= 50 if p99 else None,
    )
    resumes = [s for run in res.get("resume", []) for s in run["seconds"]]
    line(
        "the Python client resumes within 3 s of its instance's SIGKILL",
        f"{max(resumes):.2f} s" if resumes else None,
        max(resumes) <= 3 if resumes else None,
    )
    return out


def section(res: dict, command: str) -> str:
    """`command`: what produced `res`, as a reader would type it."""
    when = res.get("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    parts = [
        SECTION,
        "",
        f"Measured {when} by `{command}` (each row run {res['repeat']} "
        f"time{'s' if res['repeat'] > 1 else ''}: a range is the spread of the runs), on PostgreSQL "
        f"{res.get('server_version', '?')} on the same machine: its processes share the cores with "
        "the instances and the load generator. Each run on a database of its own, dropped after.",
        "",
        *goals(res),
    ]
    w = res.get("writes")
    if w:
        rows = [
            ("single: `PUT /v1/bench/<new id>`, wrk, 32 connections", "put"),
            ("`POST /v1/_batch` of 1,000 puts, 4 connections", "batch"),
        ]
        parts += [
            "",
            "### Writes, one instance",
            "",
            "| writes | SQLite writes/s | PostgreSQL writes/s | PostgreSQL / SQLite | instance CPU per "
            "write (SQLite / PostgreSQL) | PostgreSQL's own CPU busy, per write |",
            "|---|---|---|---|---|---|",
        ]
        for label, mode in rows:
            sq = [r.get(f"sqlite_{mode}", {}) for r in w]
            pg = [r.get(f"pg_{mode}", {}) for r in w]
            ratio = [
                p["writes_per_s"] / s["writes_per_s"]
                for s, p in zip(sq, pg, strict=True)
                if "writes_per_s" in s and "writes_per_s" in p
            ]
            parts.append(
                f"| {label} | {_spread([r.get('writes_per_s') for r in sq], ',')} | "
                f"{_spread([r.get('writes_per_s') for r in pg], ',')} | {_spread(ratio, '.0%')} | "
                f"{_spread([r.get('cpu_us_per_write') for r in sq], ',.0f')} / "
                f"{_spread([r.get('cpu_us_per_write') for r in pg], ',.0f')} us | "
                f"{_spread([r.get('postgres_busy') for r in pg], '.0%')}, "
                f"{_spread([r.get('postgres_us_per_write') for r in pg], ',.0f')} us |"
            )
        parts += ["", " ".join(_where_it_goes(w))]
        errors = [r.get("error") for run in w for r in run.values() if isinstance(r, dict) and r.get("error")]
        parts += [f"- error: {e}" for e in errors]
    c = res.get("cross")
    if c:
        first = c[0]
        parts += [
            "",
            f"### Write on one instance, watch on another ({first['watchers']:,} SSE watchers, "
            f"{first['rate']:g} writes/s for {first['seconds']:g} s)",
            "",
            "| watchers | latency p50 | p99 | max | the write's own answer p50 / p99 | delivered |",
            "|---|---|---|---|---|---|",
        ]
        rows = [
            ("PostgreSQL, 3 instances: watchers on the two that did not take the writes", "other", c),
            ("PostgreSQL, 3 instances: watchers on the one that took the writes", "same", c),
            (
                "SQLite, one instance, all the watchers (the same load, just after)",
                "same",
                [r["sqlite"] for r in c if "sqlite" in r],
            ),
        ]
        for label, key, runs in rows:
            if not runs:
                continue
            parts.append(
                f"| {label} | {_spread([r[key]['p50_ms'] for r in runs], '.0f')} ms | "
                f"{_spread([r[key]['p99_ms'] for r in runs], '.0f')} ms | "
                f"{_spread([r[key]['max_ms'] for r in runs], '.0f')} ms | "
                f"{_spread([r['acknowledged']['p50_ms'] for r in runs], '.0f')} / "
                f"{_spread([r['acknowledged']['p99_ms'] for r in runs], '.0f')} ms | "
                + ", ".join(f"{r['delivered']:,} of {r['expected']:,}" for r in runs)
                + " |"
            )
        parts += [
            "",
            "Latency from a write's send to the read that brought it, from every 10th watcher; the "
            "write's own answer is from its send to its response (its commit included). Busy, in "
            "cores, per run: the PostgreSQL instances (the writing one first) "
            + "; ".join(" / ".join(f"{b:.2f}" for b in r["instance_busy"]) for r in c)
            + "; PostgreSQL "
            + ", ".join(f"{r['postgres_busy']:.2f}" for r in c)
            + "; the load generator "
            + ", ".join(f"{r['generator_busy']:.2f}" for r in c)
            + ".",
        ]
    r = res.get("resume")
    if r:
        seconds = [s for run in r for s in run["seconds"]]
        parts += [
            "",
            "### The Python client resuming after its instance is killed",
            "",
            "`watchroute.client` watching through nginx (`deploy/nginx.conf`) in front of 3 "
            "instances, a write every 20 ms to another instance; the instance holding the watch is "
            "SIGKILLed: from the kill to the next event the client receives (goal <= 3 s): "
            + ", ".join(f"{s:.2f} s" for s in seconds)
            + f" (median {statistics.median(seconds):.2f} s, worst {max(seconds):.2f} s).",
        ]
    i = res.get("idle")
    if i:
        n = i[0]["watchers"]
        parts += [
            "",
            f"### {n:,} idle SSE watchers on one instance",
            "",
            "| instance RSS before | with them open | per watcher | database connections before / with "
            "them |",
            "|---|---|---|---|",
            f"| {_spread([x['rss_before_mb'] for x in i], '.0f')} MiB | "
            f"{_spread([x['rss_open_mb'] for x in i], '.0f')} MiB | "
            f"{_spread([x['kb_per_watcher'] for x in i], '.1f')} KiB | "
            f"{_spread([x['connections_before'] for x in i], 'd')} / "
            f"{_spread([x['connections_open'] for x in i], 'd')} |",
        ]
    parts += [f"- {name}: {err}" for name, err in res.get("errors", {}).items()]
    return "\n".join(parts)


def replace_section(doc: str, text: str) -> str:
    """`doc` with its PostgreSQL section replaced by `text` (appended if it has none)."""
    head, found, rest = doc.partition("\n" + SECTION + "\n")
    if not found:
        return doc.rstrip("\n") + "\n\n" + text + "\n"
    after = rest.find("\n## ")
    return head + "\n" + text + "\n" + (rest[after:] if after >= 0 else "")
