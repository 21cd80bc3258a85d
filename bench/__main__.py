"""``python -m bench [--quick] [--skip real_letta,...]``: run the benchmarks, write bench/results/latest.{md,json}.

``--quick`` (a smoke run: small N, one run per figure, no real Letta) writes quick.{md,json} instead.
``--merge`` runs the parts not skipped and puts them into the existing latest.{json,md}: the other
parts keep the figures of the run that made them, and the report names what was measured again, when.

Sanity failures (a missing, duplicated or reordered event, a stream that did not end)
raise and exit non-zero; timings never fail the run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import comparator, concurrency, latency, load, real_letta, report, scale_out, slow_consumer, stages, targets
from .letta_emulator import raise_fd_limit
from .procs import Child, loadavg, machine

PARTS = ("latency", "throughput", "classroom", "scale_out", "concurrency", "slow_consumer", "stages", "real_letta")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, few runs: a smoke run of a few seconds")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to skip: {', '.join(PARTS)}")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 5, quick 1)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--merge", action="store_true", help="put the parts run into the existing latest.json")
    args = parser.parse_args(argv)
    if args.merge and args.quick:
        parser.error("--merge puts full figures into latest.json: not with --quick")
    skip = {s for s in args.skip.split(",") if s}
    if args.quick:
        skip.add("real_letta")  # the real stack takes ~30 s to start: not a smoke run
    runs = args.runs or (1 if args.quick else 5)
    raise_fd_limit()
    began = time.monotonic()
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "runs": runs,
        "machine": machine(),
        "skipped": {part: "--skip" if part in args.skip else "--quick" for part in skip},
    }
    print(f"machine: {results['machine']}", flush=True)
    log_dir = Path(tempfile.mkdtemp(prefix="letta-stream-bench-"))
    print(f"child logs: {log_dir}", flush=True)
    results["comparator"] = comparator.versions(comparator.ensure_venv())
    print(f"comparator: {results['comparator']}", flush=True)
    with Child("bench.letta_emulator", health="/v1/health/", log=log_dir / "emulator.log") as emulator:
        with targets.started(emulator, log_dir) as services:
            ours = services[targets.OURS]
            agent_id = latency.post_json(ours.url + "/agents", {"user_id": "bench", "agent_type": "tutor"})["agent_id"]
            if "latency" not in skip:
                print("latency, one stream:", flush=True)
                results["latency"] = latency.run(emulator, services, agent_id, args.quick, runs)
            if "throughput" not in skip:
                print("throughput at max rate, concurrent streams:", flush=True)
                results["throughput"] = load.throughput(emulator, services, args.quick, min(runs, 3))
            if "classroom" not in skip:
                print("classroom:", flush=True)
                picked = {k: v for k, v in services.items() if k in (targets.OURS, comparator.PLAN_POOL)}
                with targets.floor(emulator, log_dir / "floor.log") as floor:
                    picked[targets.FLOOR] = floor
                    results["classroom"] = load.classroom(emulator, picked, args.quick, min(runs, 3))
        if "scale_out" not in skip:
            print("classroom on the shared turn store (Redis): workers, and the turn log's cost:", flush=True)
            results["scale_out"] = scale_out.run(emulator, args.quick, log_dir)
        if "concurrency" not in skip:
            print("concurrency:", flush=True)
            results["concurrency"] = concurrency.run(emulator, args.quick, log_dir)
        if "slow_consumer" not in skip:
            print("clients that read nothing:", flush=True)
            results["slow_consumer"] = slow_consumer.run(emulator, args.quick, log_dir)
    if "stages" not in skip:
        print("stages in-process:", flush=True)
        results["stages"] = stages.run(args.quick, runs)
    if "real_letta" not in skip:
        print("real Letta server:", flush=True)
        results["real_letta"] = real_letta.run(args.quick, runs, log_dir)
    results["loadavg_end"] = loadavg()
    results["seconds"] = round(time.monotonic() - began, 1)
    if args.merge:
        results = _merged(args.out / "latest.json", results, [part for part in PARTS if part not in skip])
    path = report.write(results, args.out)
    print(path.read_text())
    return 0


def _merged(latest: Path, fresh: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    """``latest``'s results with ``parts`` replaced by ``fresh``'s, and a note of when they were measured."""
    import json

    results: dict[str, Any] = json.loads(latest.read_text())
    for part in parts:
        results[part] = fresh[part]
        results.get("skipped", {}).pop(part, None)
        results.setdefault("remeasured", {})[part] = {
            "started": fresh["started"],
            "machine": fresh["machine"],
            "seconds": fresh["seconds"],
        }
    return results


if __name__ == "__main__":
    sys.exit(main())
