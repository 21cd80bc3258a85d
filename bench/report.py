"""The results as Markdown tables (latest.md) and JSON (latest.json)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _latency(res: dict[str, Any]) -> list[str]:
    out = ["## Added latency per event (single stream, medians of per-run figures)", ""]
    rows = []
    for load, targets in res.items():
        base = targets["direct"]
        for name, m in targets.items():
            rows.append(
                [
                    load,
                    name,
                    m["ttfe_ms"],
                    m["p50_ms"],
                    m["p99_ms"],
                    m["p50_ms"] - base["p50_ms"],
                    m["p99_ms"] - base["p99_ms"],
                    m["p50_ms"] / base["p50_ms"] if base["p50_ms"] else math.nan,
                    m["events_per_s"],
                    m["frames_per_1k"],
                ]
            )
    out += table(
        [
            "upstream",
            "path",
            "TTFE ms",
            "delay p50 ms",
            "delay p99 ms",
            "added p50 ms",
            "added p99 ms",
            "p50 ratio",
            "tokens/s delivered",
            "frames per 1k tokens",
        ],
        rows,
    )
    tok = res.get("200 tok/s", {})
    if "service w=0" in tok and "service w=50ms" in tok:
        on, off = tok["service w=50ms"], tok["service w=0"]
        out += [
            "",
            f"Coalescing at 200 tok/s: {off['frames_per_1k']:.0f} → {on['frames_per_1k']:.0f} frames per "
            f"1k tokens ({off['frames_per_1k'] / max(on['frames_per_1k'], 1e-9):.1f}x fewer) for "
            f"+{on['p50_ms'] - off['p50_ms']:.1f} ms p50 / +{on['p99_ms'] - off['p99_ms']:.1f} ms p99 delay.",
        ]
    return out


def _concurrency(rows: list[dict[str, Any]]) -> list[str]:
    out = ["## Concurrent open streams (keepalive-only upstream; late = a gap > 1.5x the keepalive interval)", ""]
    headers = "N|keepalive s|ramp s|upstream pool|got headers|failures|RSS idle MiB|RSS MiB|KiB/stream|service CPU %"
    headers += "|gap p99 s|gap max s|late streams|cancels|all cancelled after s|client CPU %|client lag ms"
    out += table(
        headers.split("|"),
        [
            [
                x["n"],
                x["keepalive_s"],
                x["ramp_s"],
                x["pool"],
                x["streams_with_headers"],
                _failures(x.get("failures", {})),
                x["rss_idle_kib"] / 1024,
                x["rss_kib"] / 1024,
                x["rss_per_stream_kib"],
                x["cpu_pct"],
                x["keepalive_gap_p99_s"],
                x["keepalive_gap_max_s"],
                x["streams_late"],
                x["upstream_cancels"],
                x.get("cancels_s", "-"),
                x["client_cpu_pct"],
                x["client_loop_lag_max_ms"],
            ]
            for x in rows
        ],
    )
    return out


def _failures(found: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in found.items()) or "none"


def _stages(res: dict[str, Any]) -> list[str]:
    out = ["## Pipeline stages in-process (source → filter → throttle → keepalive → encode)", ""]
    out += table(
        ["backend / window", "chunks", "chunks/s", "frames out"],
        [[k, v["chunks"], v["chunks_per_s"], v["frames"]] for k, v in res.items()],
    )
    return out


def _slow(res: dict[str, Any]) -> list[str]:
    out = [f"## Clients that read nothing ({res['streams']} streams, upstream writing as fast as it can)", ""]
    out += table(
        ["idle RSS KiB", "max RSS 1st half", "max RSS 2nd half", "growth 2nd half", "per stalled stream KiB"],
        [
            [
                res["rss_idle_kib"],
                res["rss_first_half_max_kib"],
                res["rss_second_half_max_kib"],
                res["growth_second_half_kib"],
                res["per_stalled_stream_kib"],
            ]
        ],
    )
    out += [
        "",
        f"Send timeout {res['send_timeout_s']} s: {res['upstream_cancels']} of {res['streams']} upstream runs "
        f"cancelled (their streams closed) within {res['closed_after_s']} s of the clients' last read.",
    ]
    if res["upstream_cancels"] < res["streams"]:
        out.append(
            "(The rest were still filling the kernel's socket buffers — several MiB per connection on loopback — "
            "which the service's memory does not include: its send timeout counts from the service's own stall.)"
        )
    return out


def _real(res: dict[str, Any]) -> list[str]:
    out = [f"## Real Letta 0.16.8 + scripted LLM (`[long {res['words']}] [slow {res['pace_ms']}]`)", ""]
    keys = [k for k in res if isinstance(res[k], dict) and "ttfe_ms" in res[k]]
    out += table(
        ["path", "TTFE ms", "total ms", "text frames", "gap p50 ms", "gap max ms"],
        [
            [
                k,
                res[k]["ttfe_ms"],
                res[k]["total_ms"],
                res[k]["text_frames"],
                res[k]["gap_p50_ms"],
                res[k]["gap_max_ms"],
            ]
            for k in keys
        ],
    )
    base = res[keys[0]]
    out.append("")
    for k in keys[1:]:
        out.append(
            f"{k}: {res[k]['ttfe_ms'] - base['ttfe_ms']:+.1f} ms TTFE, {res[k]['total_ms'] - base['total_ms']:+.1f} ms "
            "total against the direct path."
        )
    out += ["", f"Real stream ends on the wire with: `{' | '.join(res['stream_end_on_wire'])}`"]
    return out


def write(results: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "quick" if results["quick"] else "latest"  # a smoke run does not clobber the real results
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2, default=str))
    m = results["machine"]
    lines = [
        f"# letta-stream bench ({'quick' if results['quick'] else 'full'}) — {results['started']}",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), Python {m['python']}, Linux {m['kernel']}; "
        f"load average at start {m['loadavg']}, at end {results.get('loadavg_end')}. "
        f"Runs per figure: {results['runs']} (after 1 warm-up). Total {results.get('seconds')} s.",
        "",
        "Targets (reported, not enforced): added latency ≤ 1 ms p50 / ≤ 5 ms p99; ≥ 2,000 streams at ≤ 50 KiB "
        "RSS each with keepalives on time; ≥ 5x fewer frames at token rate for ≤ 50 ms added delay.",
        "",
    ]
    sections: list[tuple[str, Callable[[Any], list[str]]]] = [
        ("latency", _latency),
        ("concurrency", _concurrency),
        ("slow_consumer", _slow),
        ("stages", _stages),
        ("real_letta", _real),
    ]
    for key, render in sections:
        if key in results:
            lines += [*render(results[key]), ""]
        elif key in results.get("skipped", {}):
            lines += [f"## {key}: skipped ({results['skipped'][key]})", ""]
    path = out_dir / f"{name}.md"
    path.write_text("\n".join(lines))
    return path
