"""``sipwarden analyze`` throughput and memory against tshark, and a hostile-keyspace run.

Run ``.venv/bin/python bench/analyze.py`` (1,000,000 messages; ``--messages 100000`` for a quick
look). It is a measurement, not a test: it prints tables and exits 0 (``--check`` makes a missed
target exit 1).

What is measured
    One generated capture (``bench/gen_pcap.py``: the benign flows of ``bench/corpus.py`` plus 3 %
    attack campaigns - scanner sweep and extension enumeration, REGISTER brute force, INVITE
    flood, toll-fraud dialling with prefix walking; classic pcap, Ethernet/IPv4, UDP and some
    TCP), read by each tool as its users run it, each in its own child process pinned to CPU 0
    (``taskset -c 0``, ``--cpu``):

    * ``sipwarden analyze FILE --format json --out bench/out/analyze-report.json``: every
      registered detector, the whole report written;
    * ``tshark -r FILE -Y sip -T fields -e sip.Method -e sip.Call-ID`` (stdout read and counted
      by this script, in another process, so tshark is not slowed by a terminal).

    Wall time is ``time.perf_counter`` around the child; CPU time and peak RSS come from
    ``os.wait4`` (``ru_maxrss``) of that child. Each tool runs ``--repeat`` times, in turn; the
    best wall time and the highest peak RSS are reported. Targets (issue 3): sipwarden >= 3x
    tshark's msgs/s, and sipwarden's peak RSS <= 25 % of tshark's.

Hostile keyspace
    A second capture with ``--hostile-messages`` (1,000,000) REGISTER/INVITE requests, each from
    its own spoofed source IP with its own user, callee and Call-ID, no answers. This script runs
    the engine over it in a child (pinned likewise) with every table bound set small
    (``--bound``, 10,000: each detector's ``max_*`` table sizes, the tracker's, the engine's open
    episodes) and samples ``engine.state_size()`` per component every 10,000 messages; the target
    is that no component ever holds more than its configured bounds and that peak RSS stays
    flat (compared with the same run over a tenth of the messages). ``sipwarden analyze`` with
    default bounds is also run over it for its peak RSS.

Generated captures are cached in ``bench/out/`` (git-ignored) by kind, size and seed.
The load average is printed next to the numbers: on a shared machine they move.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import json
import os
import platform
import pstats
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from gen_pcap import GENERATOR_VERSION, GenSummary, write_hostile, write_realistic  # noqa: E402
from parse import _table  # noqa: E402

ATTACK_PREFIX = "198.18."  # gen_pcap's attack sources (RFC 2544 range)
SAMPLE_EVERY = 10_000


@dataclasses.dataclass
class Run:
    tool: str
    messages: int
    wall_s: float
    cpu_s: float
    maxrss_kib: int
    note: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.wall_s if self.wall_s else 0.0


#: The CPU the children are pinned to (``--cpu``).
CPU = 0


def _pin(cmd: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(CPU), *cmd] if taskset else cmd


def _run_child(cmd: list[str], count_lines: bool = False) -> tuple[float, float, int, int, bytes]:
    """Run ``cmd`` pinned to CPU 0: (wall s, cpu s, peak RSS KiB, stdout lines, stderr)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        _pin(cmd),
        stdout=subprocess.PIPE if count_lines else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lines = 0
    if count_lines and proc.stdout is not None:
        while chunk := proc.stdout.read(1 << 20):
            lines += chunk.count(b"\n")
    err = proc.stderr.read() if proc.stderr is not None else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err[-2000:]!r}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, lines, err


def _sipwarden_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("sipwarden")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sipwarden"]


def _cached(kind: str, n: int, seed: int, regen: bool) -> tuple[Path, dict[str, Any]]:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"analyze-{kind}-{n}-s{seed}-g{GENERATOR_VERSION}.pcap"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists() and not regen:
        return path, json.loads(meta.read_text())
    print(f"generating {path.name} ...", flush=True)
    start = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    summary: GenSummary = (write_realistic if kind == "realistic" else write_hostile)(tmp, n, seed)
    tmp.replace(path)
    data = dataclasses.asdict(summary)
    meta.write_text(json.dumps(data, indent=1))
    print(f"  {time.perf_counter() - start:.1f} s, {path.stat().st_size / 2**20:.0f} MiB")
    return path, data


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} (1/5 min) on {os.cpu_count()} CPUs"


# --- the comparison ---------------------------------------------------------------------------


def run_sipwarden(path: Path, report: Path) -> Run:
    cmd = [*_sipwarden_cmd(), "analyze", str(path), "--format", "json", "--out", str(report)]
    wall, cpu, rss, _, _ = _run_child(cmd)
    stats = json.loads(report.read_text())["stats"]
    return Run("sipwarden analyze", int(stats["sip_messages"]), wall, cpu, rss)


def run_tshark(path: Path) -> Run:
    cmd = ["tshark", "-r", str(path), "-Y", "sip", "-T", "fields", "-e", "sip.Method"]
    cmd += ["-e", "sip.Call-ID"]
    wall, cpu, rss, lines, _ = _run_child(cmd, count_lines=True)
    return Run("tshark -Y sip -T fields", lines, wall, cpu, rss)


def findings_summary(report: Path) -> list[str]:
    """Findings by detector and severity; medium+ on non-attack sources flagged as suspect."""
    findings = json.loads(report.read_text())["findings"]
    by: Counter[tuple[str, str, str]] = Counter()
    suspect: list[str] = []
    for f in findings:
        ip = (f.get("source") or {}).get("ip", "")
        origin = "attack" if ip.startswith(ATTACK_PREFIX) else "benign"
        by[(f["detector"], f["severity"], origin)] += 1
        if origin == "benign" and f["severity"] in ("medium", "high", "critical"):
            suspect.append(f"  {f['severity']:<6} {f['detector']}: {f['summary']}")
    rows: list[list[str] | str] = [["detector", "severity", "source", "findings"]]
    rows += [[d, s, o, str(c)] for (d, s, o), c in sorted(by.items())]
    out = [f"findings: {len(findings)} (source in {ATTACK_PREFIX}0.0/15 = generated attack)"]
    out += _table(rows, [False, False, False, True]) if by else []
    if suspect:
        out.append(f"medium+ findings on benign sources (false positives?): {len(suspect)}")
        out += suspect[:15] + ([f"  ... {len(suspect) - 15} more"] if len(suspect) > 15 else [])
    return out


# --- hostile keyspace (child side) ------------------------------------------------------------

#: Config fields that size a table (the rest of the ``max_*`` fields are thresholds such as
#: ``max_message_bytes``). A field described "per table" sizes each of the detector's tables.
TABLE_SIZE_FIELDS = frozenset(
    {
        "max_accounts",
        "max_bindings",
        "max_callees",
        "max_callers",
        "max_keys",
        "max_known_aors",
        "max_nonces",
        "max_pairs",
        "max_peers",
        "max_pending",
        "max_pending_requests",
        "max_recent_calls",
        "max_registrars",
        "max_sources",
        "max_targets",
        "max_users",
        "max_transactions",
        "max_calls",
        "max_auth_states",
        "max_open_episodes",
    }
)


def bounded_engine(bound: int) -> tuple[Any, dict[str, int]]:
    """An Engine of every registered detector with every table size set to ``bound`` (or its
    default when smaller); the configured bound per component (sum of its table sizes)."""
    from sipwarden.detect import DETECTORS, Engine
    from sipwarden.detect.engine import EngineConfig
    from sipwarden.detect.tracker import TrackerConfig

    def sized(model: Any) -> dict[str, int]:
        return {
            name: min(bound, f.default)
            for name, f in model.model_fields.items()
            if name in TABLE_SIZE_FIELDS and isinstance(f.default, int)
        }

    bounds: dict[str, int] = {}
    detectors = []
    for det_id, cls in DETECTORS.items():
        fields = sized(cls.Config)
        try:
            detectors.append(cls(cls.Config(**fields)))
        except Exception as exc:  # a detector mid-edit must not stop the bench
            print(f"skipped {det_id}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        bounds[det_id] = sum(fields.values())
    tracker_fields = sized(TrackerConfig)
    engine = Engine(
        detectors,
        EngineConfig(max_open_episodes=bound, tracker=TrackerConfig(**tracker_fields)),
    )
    bounds["tracker"] = sum(tracker_fields.values())
    bounds["engine episodes"] = bound
    return engine, bounds


def hostile_child(path: Path, bound: int, limit: int | None) -> dict[str, Any]:
    from sipwarden.sources.capture import iter_observations
    from sipwarden.sources.decode import SourceStats

    engine, bounds = bounded_engine(bound)
    peak: Counter[str] = Counter()
    rss_peak: Counter[str] = Counter()

    def sample() -> None:
        for kind, kib in _rss_split().items():
            rss_peak[kind] = max(rss_peak[kind], kib)
        sizes = {d.id: d.state_size() for d in engine.detectors}
        sizes["tracker"] = engine.tracker.state_size()
        sizes["engine episodes"] = len(engine._open)
        for k, v in sizes.items():
            peak[k] = max(peak[k], v)
        peak["total"] = max(peak["total"], engine.state_size())

    n = 0
    for obs in iter_observations(path, SourceStats()):
        engine.observe(obs)
        n += 1
        if n % SAMPLE_EVERY == 0:
            sample()
        if limit is not None and n >= limit:
            break
    sample()
    findings = engine.finish()
    return {
        "observations": n,
        "peak_state": dict(peak),
        "bounds": bounds,
        "evictions": engine.evictions(),
        "findings": len(findings),
        "rss_peak_kib": dict(rss_peak),
    }


def _rss_split() -> dict[str, int]:
    """Resident KiB by kind (RssAnon: the process's own memory; RssFile: mapped file pages,
    e.g. the mmapped capture), from /proc/self/status; empty where there is none."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(("RssAnon:", "RssFile:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def run_hostile(path: Path, bound: int, limit: int | None) -> tuple[dict[str, Any], Run]:
    out = OUT / "analyze-hostile-result.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--hostile-child", str(path)]
    cmd += ["--bound", str(bound), "--child-out", str(out)]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    wall, cpu, rss, _, _ = _run_child(cmd)
    result = json.loads(out.read_text())
    return result, Run("engine, bounded", result["observations"], wall, cpu, rss)


# --- profile ----------------------------------------------------------------------------------


def profile(path: Path, top: int) -> list[str]:
    """cProfile of ``sipwarden analyze`` in this process: the top functions by cumulative time."""
    from typer.main import get_command

    from sipwarden.cli import app

    report = OUT / "analyze-profile-report.json"
    argv = ["analyze", str(path), "--format", "json", "--out", str(report)]
    prof = cProfile.Profile()
    prof.enable()
    try:
        get_command(app).main(argv, standalone_mode=False)
    finally:
        prof.disable()
    prof.dump_stats(str(OUT / "analyze.prof"))
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("cumulative").print_stats(top)
    return buf.getvalue().splitlines()


def compare(
    runs: dict[str, Run], meta: dict[str, Any], report: Path, record: dict[str, Any]
) -> bool:
    """Print the sipwarden/tshark table, the targets and the findings; True if targets met."""
    sw = runs["sipwarden"]
    ts = runs.get("tshark")
    passed = True
    rows: list[list[str] | str] = [
        ["tool", "messages", "wall s", "cpu s", "msgs/s", "msgs/cpu-s", "peak RSS MiB", "sw÷row"]
    ]
    for run in runs.values():
        ratio = f"{sw.rate / run.rate:.2f}x" if run.rate else "-"
        rows.append(
            [
                run.tool,
                f"{run.messages:,}",
                f"{run.wall_s:.1f}",
                f"{run.cpu_s:.1f}",
                f"{run.rate:,.0f}",
                f"{run.messages / run.cpu_s:,.0f}" if run.cpu_s else "-",
                _mib(run.maxrss_kib),
                ratio,
            ]
        )
    print("\n".join(_table(rows, [False, True, True, True, True, True, True, True])))
    print(f"after:   {_load()}")
    record["runs"] = {k: {**dataclasses.asdict(v), "rate": v.rate} for k, v in runs.items()}
    if sw.messages != meta["messages"]:
        print(f"NOTE: sipwarden saw {sw.messages:,} SIP messages of {meta['messages']:,} written")
    if ts is not None:
        speed = sw.rate / ts.rate
        mem = sw.maxrss_kib / ts.maxrss_kib
        t1, t2 = speed >= 3.0, mem <= 0.25
        passed = t1 and t2
        print(
            f"target 1 (msgs/s >= 3x tshark): {'PASS' if t1 else 'FAIL'} "
            f"({sw.rate:,.0f} vs {ts.rate:,.0f} msgs/s = {speed:.2f}x; by CPU time "
            f"{(sw.messages / sw.cpu_s) / (ts.messages / ts.cpu_s):.2f}x)"
        )
        print(
            f"target 2 (peak RSS <= 25% of tshark): {'PASS' if t2 else 'FAIL'} "
            f"({_mib(sw.maxrss_kib)} vs {_mib(ts.maxrss_kib)} MiB = {mem:.0%})"
        )
    print()
    print("\n".join(findings_summary(report)))

    return passed


# --- main -------------------------------------------------------------------------------------


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--hostile-messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool; best is shown")
    parser.add_argument("--bound", type=int, default=10_000, help="table bound, hostile run")
    parser.add_argument("--no-tshark", action="store_true")
    parser.add_argument("--no-hostile", action="store_true")
    parser.add_argument("--only-hostile", action="store_true", help="skip the tshark comparison")
    parser.add_argument(
        "--no-hostile-cli", action="store_true", help="skip sipwarden analyze on the hostile file"
    )
    parser.add_argument("--profile", type=int, metavar="N", help="also cProfile, top N rows")
    parser.add_argument(
        "--profile-messages", type=int, default=100_000, help="capture size for --profile"
    )
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin the tools to")
    parser.add_argument("--regen", action="store_true", help="regenerate cached captures")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--hostile-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global CPU  # noqa: PLW0603 - one setting for every child of this run
    CPU = args.cpu

    if args.hostile_child:
        result = hostile_child(args.hostile_child, args.bound, args.limit)
        args.child_out.write_text(json.dumps(result))
        return 0

    ok = True
    record: dict[str, Any] = {"load_before": os.getloadavg()}
    print("sipwarden analyze benchmark (bench/analyze.py)")
    print(f"python:  {platform.python_version()} ({sys.executable})")
    print(f"machine: {platform.processor() or platform.machine()}, {platform.platform()}")
    tshark = shutil.which("tshark")
    if tshark and not args.no_tshark:
        version = subprocess.run(["tshark", "-v"], capture_output=True, text=True, check=False)
        print(f"tshark:  {version.stdout.splitlines()[0] if version.stdout else '?'}")
    if args.only_hostile:
        args.no_tshark = True
    path, meta = _cached("realistic", args.messages, args.seed, args.regen)
    print(
        f"capture: {path} ({path.stat().st_size / 2**20:,.0f} MiB): {meta['messages']:,} "
        f"messages, {meta['tcp']:,} over TCP, attacks {meta['attack']}, "
        f"{meta['last_ts'] - meta['first_ts']:,.0f} s of packet time"
    )
    print(f"pinning: {f'taskset -c {CPU}' if shutil.which('taskset') else 'none (no taskset)'}")
    print(f"before:  {_load()}")
    print()

    report = OUT / "analyze-report.json"
    runs: dict[str, Run] = {}
    for _ in range(0 if args.only_hostile else args.repeat):
        for name in ("sipwarden", "tshark"):
            if name == "tshark" and (not tshark or args.no_tshark):
                continue
            run = run_sipwarden(path, report) if name == "sipwarden" else run_tshark(path)
            best = runs.get(name)
            if best is None or run.wall_s < best.wall_s:
                run.maxrss_kib = max(run.maxrss_kib, best.maxrss_kib if best else 0)
                runs[name] = run
            elif run.maxrss_kib > best.maxrss_kib:
                best.maxrss_kib = run.maxrss_kib
    if not args.only_hostile:
        ok &= compare(runs, meta, report, record)
    else:
        record["runs"] = {}

    if not args.no_hostile:
        print()
        print(f"before:  {_load()}")
        hpath, hmeta = _cached("hostile", args.hostile_messages, args.seed, args.regen)
        print(
            f"hostile keyspace: {hpath.name}: {hmeta['messages']:,} requests from "
            f"{hmeta['distinct_sources']:,} distinct spoofed sources; bounds set to "
            f"{args.bound:,} per table; {_load()}"
        )
        tenth = max(SAMPLE_EVERY, args.hostile_messages // 10)
        small, small_run = run_hostile(hpath, args.bound, tenth)
        full, full_run = run_hostile(hpath, args.bound, None)
        default_cli = None
        if not args.no_hostile_cli:
            default_cli = run_sipwarden(hpath, OUT / "analyze-hostile-report.json")
            default_cli.tool = "sipwarden analyze (default bounds)"
        hrows: list[list[str] | str] = [
            ["component", "configured bound", f"peak, first {small['observations']:,}", "peak"]
        ]
        over: list[str] = []
        for comp, peak in sorted(full["peak_state"].items()):
            bound = full["bounds"].get(comp)
            if comp == "total":
                bound = sum(full["bounds"].values())
            if bound is not None and peak > bound:
                over.append(comp)
            hrows.append(
                [
                    comp + (" *" if comp in over else ""),
                    f"{bound:,}" if bound is not None else "?",
                    f"{small['peak_state'].get(comp, 0):,}",
                    f"{peak:,}",
                ]
            )
        print("\n".join(_table(hrows, [False, True, True, True])))
        if over:
            print(
                "* above the sum of its configured table sizes: a size applies per table "
                "(see the field's description), or a table is not bounded by config"
            )
        # Bounded: each component within its configured sizes, or (a size applying per table)
        # no larger after all the messages than after the first tenth.
        grew = [c for c in over if full["peak_state"][c] > small["peak_state"].get(c, 0)]
        saturated = not grew
        prow: list[list[str] | str] = [
            ["run", "messages", "wall s", "msgs/s", "peak RSS MiB", "RssAnon MiB", "RssFile MiB"]
        ]
        for hrun, res in ((small_run, small), (full_run, full), (default_cli, None)):
            if hrun is None:
                continue
            split = res["rss_peak_kib"] if res else {}
            prow.append(
                [
                    hrun.tool + (" (first tenth)" if hrun is small_run else ""),
                    f"{hrun.messages:,}",
                    f"{hrun.wall_s:.1f}",
                    f"{hrun.rate:,.0f}",
                    _mib(hrun.maxrss_kib),
                    _mib(split["RssAnon"]) if "RssAnon" in split else "-",
                    _mib(split["RssFile"]) if "RssFile" in split else "-",
                ]
            )
        print("\n".join(_table(prow, [False, True, True, True, True, True, True])))
        # The process's own memory when /proc says it (mapped capture pages are the kernel's to
        # drop), else the whole peak RSS.
        kind = "RssAnon" if "RssAnon" in small["rss_peak_kib"] else None
        before = small["rss_peak_kib"][kind] if kind else small_run.maxrss_kib
        after = full["rss_peak_kib"][kind] if kind else full_run.maxrss_kib
        growth = after / before
        flat = growth <= 1.25
        print(f"evictions: {full['evictions']:,}; findings: {full['findings']:,}")
        print(
            f"target 3 (every component within its configured bounds, or not growing after "
            f"the first {small['observations']:,}): {'PASS' if saturated else 'FAIL'} (total "
            f"{small['peak_state']['total']:,} -> {full['peak_state']['total']:,}; above "
            f"bounds: {', '.join(over) or 'none'}; above bounds and growing: "
            f"{', '.join(grew) or 'none'})"
        )
        print(
            f"target 4 ({kind or 'peak RSS'} flat, 10x messages): {'PASS' if flat else 'FAIL'} "
            f"({_mib(before)} -> {_mib(after)} MiB, x{growth:.2f})"
        )
        ok &= saturated and flat
        record["hostile"] = {
            **full,
            "rss_kib_tenth": small_run.maxrss_kib,
            "rss_kib_full": full_run.maxrss_kib,
            "rss_kib_default_cli": default_cli.maxrss_kib if default_cli else None,
        }

    if args.profile:
        print()
        ppath, _ = _cached("realistic", args.profile_messages, args.seed, args.regen)
        print(f"cProfile of sipwarden analyze {ppath.name} (in-process, top {args.profile}):")
        print("\n".join(profile(ppath, args.profile)))
    record["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
