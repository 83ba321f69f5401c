"""The "Change capture" section of docs/benchmarks.md, written from bench/capture.py's figures,
beside the PostgreSQL section (bench/postgres_report.py)."""

from __future__ import annotations

SECTION = "## Change capture"
AFTER = "## PostgreSQL"
GOAL_CHANGES_PER_S = 20_000
GOAL_P99_MS = 50.0


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _machine_load(load: str | None) -> str:
    """What else the machine was doing, from its load average when the benchmark began."""
    if load is None:
        return "(its load at the start not recorded)"
    if float(load) <= 2:  # the cores of the machine in docs/benchmarks.md
        return f"with nothing else running (load average {load} at the start)"
    return (
        f"while it was shared with other work (load average {load} at the start): "
        "the figures are low and noisy"
    )


def section(res: dict) -> str:
    runs = res["runs"]
    rates = [r["bulk_update_changes_per_s"] for r in runs]
    p50s = [r["latency_p50_ms"] for r in runs]
    p99s = [r["latency_p99_ms"] for r in runs]

    def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
        low, high = min(values), max(values)
        return fmt.format(low) if low == high else f"{fmt.format(low)}-{fmt.format(high)}"

    rows = "\n".join(
        f"| {n + 1} | {r['bulk_update_changes']:,} of {r['rows']:,} | {r['bulk_update_seconds']:.2f} s "
        f"| {r['bulk_update_changes_per_s']:,} | {r['latency_received']:,} of {r['latency_transactions']:,} "
        f"| {r['latency_p50_ms']:.1f} / {r['latency_p99_ms']:.1f} ms |"
        for n, r in enumerate(runs)
    )
    lines = [
        SECTION,
        "",
        f"Measured {res['date']} by `{res['command']}` ({len(runs)} run(s); a range is the spread "
        f"of the runs), on PostgreSQL {res.get('server_version', '?')} on the same machine "
        f"{_machine_load(res.get('load'))}. Each run on a database of its own, dropped after with its slot. "
        f"A table of {runs[0]['rows']:,} rows captured by one watchroute instance "
        "(`--capture bench`); one SSE watcher.",
        "",
        "| goal | this run (worst of the runs) | |",
        "|---|---|---|",
        f"| a bulk `UPDATE` of {runs[0]['rows']:,} rows reaches a watcher at >= "
        f"{GOAL_CHANGES_PER_S:,} changes/s | {min(rates):,} changes/s | "
        f"{_met(min(rates) >= GOAL_CHANGES_PER_S)} |",
        f"| commit-to-watcher p99 <= {GOAL_P99_MS:.0f} ms, single-row transactions at "
        f"{res.get('rate', 200):.0f}/s | {max(p99s):.1f} ms | {_met(max(p99s) <= GOAL_P99_MS)} |",
        "",
        "| run | bulk UPDATE: changes received | from its COMMIT to the last event | changes/s "
        "| single-row transactions received | commit to watcher p50 / p99 |",
        "|---|---|---|---|---|---|",
        rows,
        "",
        f"Bulk UPDATE: {spread(rates)} changes/s; latency p50 {spread(p50s, '{:.1f}')} ms, "
        f"p99 {spread(p99s, '{:.1f}')} ms.",
    ]
    if res.get("decoders"):
        decoded = ", ".join(f"{k} {v}" for k, v in res["decoders"].items())
        lines += ["", f"Decoding alone (the same UPDATE): {decoded}."]
    return "\n".join(lines)


def replace_section(doc: str, text: str) -> str:
    """`doc` with its change capture section replaced by `text`; a doc without one gets it after
    the PostgreSQL section (or at its end)."""
    head, found, rest = doc.partition("\n" + SECTION + "\n")
    if found:
        after = rest.find("\n## ")
        return head + "\n" + text + "\n" + (rest[after:] if after >= 0 else "")
    head, found, rest = doc.partition("\n" + AFTER + "\n")
    if found:
        after = rest.find("\n## ")
        if after >= 0:
            return head + found + rest[:after] + "\n\n" + text + "\n" + rest[after:]
    return doc.rstrip("\n") + "\n\n" + text + "\n"
