"""The command line: pick scenarios and contenders, run every case, write RESULTS.md and the chart."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.consumer import BenchError
from benchmarks.contenders import CONTENDERS, Contender
from benchmarks.progress import Progress
from benchmarks.scenarios import BY_KEY, SCENARIOS, Case, Measurement, Scenario
from benchmarks.settings import pick

HERE = Path(__file__).resolve().parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the eventbus benchmark suite (issue 5): every scenario, every contender in its own "
        "process against a private redis-server; write RESULTS.md, results.json and a PNG chart.",
    )
    p.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run: smaller workloads, 1 repetition")
    p.add_argument("--reps", type=int, help="repetitions of every case (default 3, quick 1)")
    p.add_argument("--only", help=f"comma-separated scenarios: {','.join(BY_KEY)},memory")
    p.add_argument("--contenders", help=f"comma-separated contenders: {','.join(c.key for c in CONTENDERS)}")
    p.add_argument("--skip", default="", help="comma-separated contenders to leave out")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="the Markdown report")
    p.add_argument("--json", type=Path, default=HERE / "results.json", help="every raw measurement")
    p.add_argument("--chart", type=Path, default=HERE / "results.png", help="the PNG chart (needs matplotlib)")
    p.add_argument(
        "--report-only", action="store_true", help="rebuild RESULTS.md and the chart from --json, run nothing"
    )
    return p.parse_args(argv)


def select_contenders(args: argparse.Namespace, progress_note: Any) -> list[Contender]:
    wanted = set(args.contenders.split(",")) if args.contenders else {c.key for c in CONTENDERS}
    skip = set(filter(None, args.skip.split(",")))
    unknown = (wanted | skip) - {c.key for c in CONTENDERS}
    if unknown:
        raise SystemExit(f"unknown contender(s): {', '.join(sorted(unknown))}")
    chosen = []
    for c in CONTENDERS:
        if c.key not in wanted or c.key in skip:
            continue
        why = c.missing()
        if why:
            progress_note(f"skipping {c.key}: {why}")
            continue
        chosen.append(c)
    return chosen


def select_scenarios(args: argparse.Namespace) -> list[Scenario]:
    if not args.only:
        return list(SCENARIOS)
    keys = args.only.split(",")
    unknown = [k for k in keys if k not in BY_KEY and k != "memory"]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)} (choose from {', '.join(BY_KEY)}, memory)")
    if "memory" in keys:  # memory is read from the drain and many-subscription runs
        keys += ["drain", "many"]
    return [s for s in SCENARIOS if s.key in keys]


def run_case(case: Case) -> Measurement:
    try:
        return case.run()
    except BenchError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one broken case must not lose the rest of the suite's figures
        return {"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"}


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so the running consumer and redis-server are stopped too.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    args = parse(argv)
    if args.report_only:
        write_reports(json.loads(args.json.read_text()), args)
        return 0
    settings = pick(args.quick, args.reps)
    started = time.time()
    contenders = select_contenders(args, print)
    scenarios = select_scenarios(args)
    keys = {s.key for s in scenarios}
    plan: list[tuple[Scenario, list[Case]]] = []
    skipped: dict[str, str] = {}
    for s in scenarios:
        reason = s.skip()
        if reason:
            skipped[s.key] = reason
            print(f"skipping scenario {s.number} {s.key}: {reason}")
            continue
        plan.append((s, s.build(settings, [c for c in contenders if c.takes_part(s.key)])))
    if "olympics" in keys and (why := _olympics_note()):
        skipped["olympics-eventbus"] = why
        print(f"scenario 5: {why}")

    progress = Progress(sum(len(cases) for _, cases in plan) * settings.reps)
    mode = "quick" if settings.quick else "full"
    print(f"{mode} run: {len(plan)} scenarios, {len(contenders)} contenders, {settings.reps} repetition(s)")
    results: list[dict[str, Any]] = []
    interrupted = False
    try:
        for s, cases in plan:
            # Repetitions interleave the contenders, so a noisy minute on the machine hurts them all alike.
            for rep in range(settings.reps):
                for case in cases:
                    progress.begin(f"{s.key:<8} {case.variant:<20} {case.contender:<16} rep {rep + 1}/{settings.reps}")
                    m = run_case(case)
                    progress.end(report.outcome(s, m))
                    results.append(
                        {"scenario": s.key, "variant": case.variant, "contender": case.contender, "rep": rep + 1, **m}
                    )
    except KeyboardInterrupt:  # the running case has cleaned up its processes on the way out
        interrupted = True
        progress.end("interrupted")
        mode += ", interrupted"

    run = {
        "command": " ".join(["python -m benchmarks", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
        "mode": mode,
        "settings": settings.__dict__,
        "started": started,
        "duration_s": time.time() - started,
        "machine": report.machine(),
        "versions": report.versions(),
        "contenders": {c.key: c.label for c in contenders},
        "skipped": skipped,
        "results": results,
    }
    for path in (args.json, args.out, args.chart):
        path.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(run, indent=1, default=str))
    write_reports(run, args)
    print(f"total {time.time() - started:.0f} s")
    if interrupted:
        return 130
    return 1 if any("error" in r for r in results) else 0


def write_reports(run: dict[str, Any], args: argparse.Namespace) -> None:
    chart = report.chart(run, args.chart)
    kept = report.kept_notes(args.out.read_text()) if args.out.exists() else ""
    args.out.write_text(report.markdown(run, chart_name=args.chart.name if chart else None, kept=kept))
    print(f"\nwrote {args.out}, {args.json}" + (f", {args.chart}" if chart else " (no chart: matplotlib missing)"))


def _olympics_note() -> str | None:
    from benchmarks.scenarios.olympics import app_missing

    return app_missing()
