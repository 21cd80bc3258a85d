"""The results as Markdown tables (latest.md) and JSON (latest.json)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .targets import FLOOR


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


PLAN = "plan (FastAPI+uvicorn)"
PLAN_POOL = "plan, pool 4096"


def _ratio(a: float, b: float) -> float:
    """a / b; not a number when b is not positive (an added delay within the noise of the direct path)."""
    return a / b if b > 0 else math.nan


def _latency(res: dict[str, Any]) -> list[str]:
    out = [
        "## Added latency per event (single stream, medians of per-run figures)",
        "",
        "`added` is the delay beyond the emulator's own (direct); `vs plan` divides a path's added delay by the"
        " plan's (below 1: less added than the plan).",
        "",
    ]
    rows = []
    for load, targets in res.items():
        base = targets["direct"]
        plan = targets.get(PLAN)
        for name, m in targets.items():
            added50, added99 = m["p50_ms"] - base["p50_ms"], m["p99_ms"] - base["p99_ms"]
            rows.append(
                [
                    load,
                    name,
                    m["ttfe_ms"],
                    m["p50_ms"],
                    m["p99_ms"],
                    added50,
                    added99,
                    _ratio(added50, plan["p50_ms"] - base["p50_ms"]) if plan and name != "direct" else math.nan,
                    _ratio(added99, plan["p99_ms"] - base["p99_ms"]) if plan and name != "direct" else math.nan,
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
            "added p50 vs plan",
            "added p99 vs plan",
            "tokens/s delivered",
            "frames per 1k tokens",
        ],
        rows,
    )
    tok = res.get("200 tok/s", {})
    if "ours w=0" in tok and "ours w=50ms" in tok:
        on, off = tok["ours w=50ms"], tok["ours w=0"]
        out += [
            "",
            f"Coalescing at 200 tok/s: {off['frames_per_1k']:.0f} → {on['frames_per_1k']:.0f} frames per "
            f"1k tokens ({off['frames_per_1k'] / max(on['frames_per_1k'], 1e-9):.1f}x fewer) for "
            f"+{on['p50_ms'] - off['p50_ms']:.1f} ms p50 / +{on['p99_ms'] - off['p99_ms']:.1f} ms p99 delay.",
        ]
    return out


def _throughput(res: dict[str, Any]) -> list[str]:
    out = [
        "## Throughput at max rate, concurrent streams (medians; the emulator writes as fast as it can)",
        "",
        "Deltas delivered per second over all streams, first request to last `done`; `vs plan` = ours / plan.",
        "",
    ]
    rows = []
    for load, targets in res.items():
        plan, plan_pool = targets.get(PLAN), targets.get(PLAN_POOL)
        for name, m in targets.items():
            if not isinstance(m, dict):
                continue
            rows.append(
                [
                    load,
                    targets["count_per_stream"],
                    name,
                    m["deltas_per_s"],
                    _ratio(m["deltas_per_s"], plan["deltas_per_s"]) if plan else math.nan,
                    _ratio(m["deltas_per_s"], plan_pool["deltas_per_s"]) if plan_pool else math.nan,
                    m["cpu_pct"],
                    m["delay_p50_ms"],
                    m["delay_p99_ms"],
                    m["frames_per_1k"],
                    m["client_cpu_pct"],
                ]
            )
    out += table(
        [
            "streams",
            "deltas each",
            "path",
            "deltas/s",
            "vs plan",
            "vs plan pool 4096",
            "CPU %",
            "delay p50 ms",
            "delay p99 ms",
            "frames per 1k",
            "client CPU %",
        ],
        rows,
    )
    return out


CLASS_DELAY_MS = 60.0
"""The classroom's delay target (the 50 ms window + 10 ms)."""


def _classroom(res: dict[str, Any]) -> list[str]:
    out = [
        f"## Classroom: {res['streams']} streams x {res['rate']} deltas/s x {res['seconds']} s, starts spread over "
        f"{res['spread_s']:g} s (one process each)",
        "",
        "CPU = the serving process's CPU time over the load's wall time; delay = emulator write → client read of"
        " every delta; `vs plan` = ours / the plan with its pool raised to 4096.",
        "",
    ]
    if FLOOR in res:
        out += [
            f"`{FLOOR}` is the floor (`bench/floor_app.py`): Quart on hypercorn as deployed with nothing of ours"
            " (a raw connection per stream, a minimal parse, the same 50 ms window; no letta-client, auth, turn log,"
            " keepalive or cancel). It is a lower bound, not a target: a delay it misses, no app on this stack"
            " meets on this machine.",
            "",
        ]
    plan = res.get(PLAN_POOL)
    rows = []
    for name, m in res.items():
        if not isinstance(m, dict):
            continue
        rows.append(
            [
                name,
                m["cpu_pct"],
                _ratio(m["cpu_pct"], plan["cpu_pct"]) if plan else math.nan,
                m["delay_p50_ms"],
                m["delay_p99_ms"],
                _ratio(m["delay_p99_ms"], plan["delay_p99_ms"]) if plan else math.nan,
                m["deltas_per_s"],
                m["frames_per_1k"],
                m["client_cpu_pct"],
                m.get("emulator_cpu_pct", "-"),
                m.get("host_busy_pct", "-"),
                m.get("loadavg", "-"),
            ]
        )
    out += table(
        [
            "path",
            "CPU %",
            "CPU vs plan",
            "delay p50 ms",
            "delay p99 ms",
            "p99 vs plan",
            "deltas/s",
            "frames per 1k",
            "client CPU %",
            "emulator CPU %",
            "machine busy % (all cores)",
            "load average",
        ],
        rows,
    )
    if res.get("class_sizes"):
        out += _class_sizes(res)
    return out


def _class_sizes(res: dict[str, Any]) -> list[str]:
    """Delay and CPU by class size, the full class included: the largest class each target serves in time."""
    names = [name for name, m in res.items() if isinstance(m, dict)]
    out = [
        "",
        f"### Smaller classes (same {res['rate']} deltas/s x {res['seconds']} s, "
        f"starts spread over {res['spread_s']:g} s)",
        "",
        f"How large a class one process serves within the target: medians of {res.get('class_size_runs', 3)} runs"
        " per size (the full class: its one run above); machine busy % = all cores, every process and the kernel,"
        " during that target's runs.",
        "",
    ]
    rows = []
    for row in _by_size(res):
        cells: list[Any] = [row["streams"]]
        for name in names:
            m = row.get(name)
            cells += (
                [m["cpu_pct"], m["delay_p50_ms"], m["delay_p99_ms"], m.get("host_busy_pct", "-")] if m else ["-"] * 4
            )
        rows.append(cells)
    headers = ["students"]
    for name in names:
        headers += [f"{name} CPU %", f"{name} p50 ms", f"{name} p99 ms", "machine busy %"]
    out += table(headers, rows)
    out.append("")
    for name in names:
        fit = served_in_time(res, name)
        out.append(
            f"- {name}: every class up to {fit} students had a delay p99 <= {CLASS_DELAY_MS:g} ms"
            if fit
            else f"- {name}: no class measured had a delay p99 <= {CLASS_DELAY_MS:g} ms"
        )
    return out


def _by_size(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The smaller classes and the full one (its targets' figures), smallest first."""
    full = {"streams": res["streams"], **{name: m for name, m in res.items() if isinstance(m, dict)}}
    return sorted([*res.get("class_sizes", []), full], key=lambda row: row["streams"])


def served_in_time(res: dict[str, Any], name: str) -> int:
    """The largest class size up to which every measured class had ``name``'s delay p99 within the target (0: none)."""
    fit = 0
    for row in _by_size(res):
        if name not in row or row[name]["delay_p99_ms"] > CLASS_DELAY_MS:
            break
        fit = row["streams"]
    return fit


def _concurrency(rows: list[dict[str, Any]]) -> list[str]:
    out = ["## Concurrent open streams (keepalive-only upstream; late = a gap > 1.5x the keepalive interval)", ""]
    grace = next((x["grace_s"] for x in rows if x.get("grace_s") is not None), None)
    if grace is not None:
        out += [
            f"When the clients close, every turn waits the service's resume grace ({grace:g} s here), then its",
            "upstream run is cancelled; 'all cancelled after' counts from the close.",
            "",
        ]
    headers = "N|keepalive s|ramp s|upstream pool|got headers|failures|RSS idle MiB|RSS MiB|KiB/stream|service CPU %"
    headers += "|KiB/stream vs plan|gap p99 s|gap max s|late streams|cancels|all cancelled after s|client CPU %"
    headers += "|client lag ms"
    plan = next((x for x in rows if x["pool"] == PLAN_POOL), None)
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
                _ratio(x["rss_per_stream_kib"], plan["rss_per_stream_kib"]) if plan else math.nan,
                x["keepalive_gap_p99_s"],
                x["keepalive_gap_max_s"],
                "-" if x["streams_late"] is None else x["streams_late"],
                "-" if x["upstream_cancels"] is None else x["upstream_cancels"],
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
    out = [
        "## Pipeline stages in-process (source → map → throttle → keepalive → encode)",
        "",
        "tasks: SDK models, a task per stage, one-item links; fused: raw dicts, the service's composition "
        "(2 tasks, batching links, every ready frame taken at once).",
        "",
    ]
    out += table(
        ["form, backend, window", "chunks", "chunks/s", "frames out"],
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
        f"cancelled (their streams closed, then the resume grace of {res.get('grace_s', 30):g} s over) "
        f"within {res['closed_after_s']} s of the clients' last read.",
    ]
    if res["upstream_cancels"] < res["streams"]:
        out.append(
            "(The rest were still filling the kernel's socket buffers — several MiB per connection on loopback — "
            "which the service's memory does not include: its send timeout counts from the service's own stall.)"
        )
    return out


def _real(res: dict[str, Any]) -> list[str]:
    out = [f"## Real Letta 0.16.8 + scripted LLM (`[long {res['words']}] [slow {res['pace_ms']}]`)", ""]
    if "run" in res:  # measured on its own (python -m bench.real_letta), merged into the last full report
        run = res["run"]
        out += [
            f"Measured in its own run ({run['started']}; load average at start {run['loadavg']}, "
            f"at end {run['loadavg_end']}; {run['seconds']} s).",
            "",
        ]
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
    if "settle_s" in res:
        out += [f"Every turn waits {res['settle_s']} s after the previous one; the rotation alternates direction.", ""]
    for k in keys[1:]:
        out.append(
            f"{k}: {res[k]['ttfe_ms'] - base['ttfe_ms']:+.1f} ms TTFE, {res[k]['total_ms'] - base['total_ms']:+.1f} ms "
            "total against the direct path."
        )
    reconnect = res.get("reconnect_to_first_frame_ms")
    if reconnect:
        out += [
            "",
            f"Reconnect (drop after 10 text frames, {res.get('reconnect_away_s', 0)} s away, resume with"
            " `Last-Event-ID`): from the request to the first replayed frame, "
            + ", ".join(f"{k} {v} ms" for k, v in reconnect.items())
            + ".",
        ]
    out += ["", f"Real stream ends on the wire with: `{' | '.join(res['stream_end_on_wire'])}`"]
    return out


def _scale_out(res: dict[str, Any]) -> list[str]:
    out = [
        f"## Classroom on the shared turn store: {res['streams']} streams x {res['rate']} deltas/s"
        f" x {res['seconds']} s",
        "",
        "The service as deployed with its turn state in a real Redis: the launcher with one or two worker processes"
        " (CPU = launcher + workers), and one process with the turn log on (default) or off (`STREAM_RESUME=off`)."
        " Redis round trips = the store's scripts (one per record update or log batch); commands = every command"
        " Redis ran, inside scripts too (INFO commandstats); both per stream and second.",
        "",
    ]
    rows = [
        [
            name,
            m["cpu_pct"],
            m["cpu_pct_per_100_streams"],
            m["delay_p50_ms"],
            m["delay_p99_ms"],
            m["deltas_per_s"],
            m["redis_scripts_per_stream_s"],
            m["redis_commands_per_stream_s"],
            m.get("loadavg", "-"),
        ]
        for name, m in res.items()
        if isinstance(m, dict)
    ]
    out += table(
        [
            "path",
            "CPU %",
            "CPU % per 100 streams",
            "delay p50 ms",
            "delay p99 ms",
            "deltas/s",
            "Redis cmds/stream/s",
            "loadavg",
        ],
        rows,
    )
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
        f"Comparator (the original plan's design, its own environment): {results.get('comparator', '-')}.",
        "",
        *[
            f"Measured again on {again['started']} (`--merge`, {again['seconds']} s, load average at start "
            f"{again['machine']['loadavg']}): {part}."
            for part, again in results.get("remeasured", {}).items()
        ],
        "",
        *_targets(results),
        "",
    ]
    sections: list[tuple[str, Callable[[Any], list[str]]]] = [
        ("latency", _latency),
        ("throughput", _throughput),
        ("classroom", _classroom),
        ("scale_out", _scale_out),
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


def _targets(results: dict[str, Any]) -> list[str]:
    """The issue's targets against the comparator, measured in this run (reported, not enforced)."""
    rows: list[list[Any]] = []

    def add(what: str, measured: str, target: str, met: bool | None) -> None:
        rows.append([what, measured, target, "-" if met is None else "yes" if met else "**no**"])

    tp = results.get("throughput", {})
    for n in ("20 streams", "100 streams"):
        if n in tp and PLAN in tp[n]:
            plan = tp[n][PLAN]["deltas_per_s"]
            for name, need in (("ours w=50ms", 1.5), ("ours w=0", 1.0)):
                if name in tp[n]:
                    ratio = tp[n][name]["deltas_per_s"] / plan
                    add(f"max rate, {n}, {name}", f"{ratio:.2f}x plan", f">= {need}x", ratio >= need)
    room = results.get("classroom", {})
    if "ours w=50ms" in room and PLAN_POOL in room:
        ours, plan = room["ours w=50ms"], room[PLAN_POOL]
        within = f"<= {CLASS_DELAY_MS:g} ms"
        floor = room.get(FLOOR)
        measured = f"{ours['delay_p99_ms']:.1f} ms"
        if floor:
            measured += f" (floor {floor['delay_p99_ms']:.1f} ms)"
        add("classroom delay p99", measured, within, ours["delay_p99_ms"] <= CLASS_DELAY_MS)
        if room.get("class_sizes"):
            served = [("", "ours w=50ms"), (" vs plan ", PLAN_POOL), (" vs floor ", FLOOR)]
            add(
                f"classroom: students served with delay p99 {within} (reported)",
                "".join(
                    sep + (f"up to {fit}" if (fit := served_in_time(room, name)) else "none")
                    for sep, name in served
                    if name in room
                ),
                "-",
                None,
            )
        add(
            "classroom CPU",
            f"{ours['cpu_pct']:.0f}% vs plan {plan['cpu_pct']:.0f}%",
            "below plan (pool 4096)",
            ours["cpu_pct"] < plan["cpu_pct"],
        )
    tok = results.get("latency", {}).get("200 tok/s", {})
    if "ours w=0" in tok and PLAN in tok:
        base, ours, plan = tok["direct"], tok["ours w=0"], tok[PLAN]
        a50, a99, p50 = (
            ours["p50_ms"] - base["p50_ms"],
            ours["p99_ms"] - base["p99_ms"],
            plan["p50_ms"] - base["p50_ms"],
        )
        add("1 stream 200/s, throttle off: added p50", f"{a50:.2f} ms vs plan {p50:.2f} ms", "<= plan", a50 <= p50)
        add("1 stream 200/s, throttle off: added p99", f"{a99:.2f} ms", "<= 1 ms", a99 <= 1.0)
    conc = results.get("concurrency", [])
    plan_row = next((x for x in conc if x["pool"] == PLAN_POOL), None)
    ours_row = next((x for x in conc if x["n"] == (plan_row or {}).get("n") and x["pool"] != PLAN_POOL), None)
    if plan_row and ours_row:
        a, b = ours_row["rss_per_stream_kib"], plan_row["rss_per_stream_kib"]
        add(f"RSS per open stream ({ours_row['n']} held)", f"{a:.0f} KiB vs plan {b:.0f} KiB", "<= plan", a <= b)
    late = next((x for x in conc if x["n"] == 2000 and x["keepalive_s"] == 1.0 and x["pool"] != PLAN_POOL), None)
    if late:
        add("2,000 streams, 1 s keepalive: streams late", str(late["streams_late"]), "0", late["streams_late"] == 0)
    real = results.get("real_letta", {})
    direct = next((v for k, v in real.items() if k.startswith("direct") and isinstance(v, dict)), None)
    default = real.get("through /chat/stream (default: turn log in Redis)")
    if direct and default:
        d_first, d_total = default["ttfe_ms"] - direct["ttfe_ms"], default["total_ms"] - direct["total_ms"]
        add("real Letta, default: first text", f"{d_first:+.0f} ms vs direct", "<= direct + 60 ms", d_first <= 60)
        add("real Letta, default: gap p50", f"{default['gap_p50_ms']:.0f} ms", "<= 65 ms", default["gap_p50_ms"] <= 65)
        add("real Letta, default: whole turn", f"{d_total:+.0f} ms vs direct", "<= direct + 50 ms", d_total <= 50)
    for where, value in real.get("reconnect_to_first_frame_ms", {}).items():
        if where.endswith("p50") and not where.startswith("caught up"):
            add(f"reconnect to first replayed frame, {where}", f"{value:.1f} ms", "<= 50 ms", value <= 50)
    if not rows:
        return []
    return ["## Targets (vs the comparator, this run)", "", *table(["what", "measured", "target", "met"], rows)]
