"""SIP parse throughput: sipwarden against sippy, sipmessage and a dict-split floor.

Run ``.venv/bin/python bench/parse.py`` (``make bench``). It is a measurement, not a test: it
prints a table and exits 0 (``--check`` makes a failed target exit 1).

What is measured
    Every parser turns the same corpus (``bench/corpus.py``: by default 100,000 realistic,
    deterministic SIP messages - registrations with digest auth, OPTIONS keep-alives, INVITE
    dialogs with SDP, CANCELs, failures, trunk calls through an SBC) into the same eight
    fields per message: method (requests) or status code (responses), Call-ID, CSeq number,
    CSeq method, From tag, To tag (None when absent), top Via branch, and User-Agent
    (requests) or Server (responses), None when absent. The input is ``bytes`` as read from a
    socket; a parser that wants ``str`` decodes inside the timed loop, as that is part of its
    cost. Each parser is used the way its users would use it (its public parse entry point and
    accessors), one process, one thread, one core.

How it is timed
    For each parser: one untimed warm-up pass over the whole corpus that also checks every
    message's fields against the floor's. Then ``--repeat`` (default 3) rounds, each with one
    timed pass (``time.perf_counter``) over the whole corpus per parser, round-robin so that
    load from elsewhere on the machine hits every parser alike; the table shows each parser's
    best pass. The garbage collector stays enabled (allocation-heavy parsers pay for it, as
    they would in a server), but the harness's own data (corpus, reference fields) is moved
    out of its reach with ``gc.freeze()`` first; ``--no-gc`` disables it during the timed
    passes instead, for every parser alike. The output says which. Quote numbers from the
    default 100,000 messages: with a small corpus (a few thousand messages) a parser that
    remembers header values between messages (sipwarden keeps up to 4,096 per header type)
    finds the previous pass's values still cached, which flatters it.

How to read the table
    msgs/s and µs/msg come from the best pass. "sipwarden÷row" is sipwarden's msgs/s divided
    by the row's: 6.0x on a peer's row means sipwarden parses six times as many messages per
    second; below 1x on the floor's row is expected. The floor ("dict-split floor") is a
    minimal no-validation parser (split head/body, decode, split lines, one dict of lower-cased
    names, str.partition/find for the fields): the cost of merely touching every header, not
    a competitor, since it validates nothing. "errors" counts messages on which the parser
    raised; "mismatches" counts messages whose fields differ from the floor's (the first
    examples are printed below the table). Target 1 is sipwarden >= 5x the faster of sippy and
    sipmessage, target 2 is sipwarden >= 100,000 msgs/s; both also require sipwarden to have
    no errors or mismatches. ``--by-kind`` (automatic for sipwarden when a target fails) adds
    µs/msg per message kind, to see where time goes: there each message is timed alone, in
    corpus order (caches behave as in the main passes), minus the clock's cost on a no-op.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

try:
    from corpus import DEFAULT_MESSAGES, generate_labeled
except ImportError:  # imported from elsewhere than bench/
    sys.path.insert(0, str(HERE))
    from corpus import DEFAULT_MESSAGES, generate_labeled

#: kind (method or status), Call-ID, CSeq number, CSeq method, From tag, To tag, top Via
#: branch, User-Agent (requests) or Server (responses).
Fields = tuple[Any, ...]
Extract = Callable[[bytes], Fields]
FIELD_NAMES = (
    "kind",
    "call_id",
    "cseq_number",
    "cseq_method",
    "from_tag",
    "to_tag",
    "via_branch",
    "agent",
)

PARSER_ORDER = ("sipwarden", "sippy", "sipmessage", "floor")
TITLES = {"floor": "dict-split floor"}
TARGET_RATIO = 5.0
TARGET_RATE = 100_000
MAX_EXAMPLES = 5


# --- the floor -------------------------------------------------------------------------------

_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via"}


def _param(value: str, key: str, start: int) -> str | None:
    i = value.find(key, start)
    if i < 0:
        return None
    i += len(key)
    j = value.find(";", i)
    return (value[i:] if j < 0 else value[i:j]).strip()


def floor_extract(data: bytes) -> Fields:
    """The cost floor: no validation, one dict, str.partition/find."""
    head = data.partition(b"\r\n\r\n")[0]
    lines = head.decode("utf-8").split("\r\n")
    headers: dict[str, str] = {}
    compact = _COMPACT
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.rstrip().lower()
        name = compact.get(name, name)
        if name not in headers:  # first occurrence: the top Via
            headers[name] = value
    start = lines[0]
    if start.startswith("SIP/2.0 "):
        kind: str | int = int(start[8:11])
        agent = headers.get("server")
    else:
        kind = start[: start.find(" ")]
        agent = headers.get("user-agent")
    number, _, method = headers["cseq"].strip().partition(" ")
    from_ = headers["from"]
    to = headers["to"]
    via = headers["via"].partition(",")[0]  # first value of a combined Via line
    return (
        kind,
        headers["call-id"].strip(),
        int(number),
        method.strip(),
        _param(from_, ";tag=", from_.rfind(">") + 1),
        _param(to, ";tag=", to.rfind(">") + 1),
        _param(via, ";branch=", 0),
        agent.strip() if agent is not None else None,
    )


# --- the parsers -----------------------------------------------------------------------------


@dataclass
class Parser:
    name: str
    api: str
    extract: Extract | None = None
    unavailable: str | None = None

    @property
    def title(self) -> str:
        return TITLES.get(self.name, self.name)


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 160 else text[:157] + "..."


def load_sipwarden() -> Parser:
    api = (
        "sipwarden.sip.parse_message(bytes); m.method | m.status (isinstance Request), "
        "m.call_id, m.cseq.number, m.cseq.method, m.from_.tag, m.to.tag, m.via[0].branch, "
        'm.headers.get("User-Agent" | "Server")'
    )
    if (SRC / "sipwarden").is_dir() and str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))  # this checkout's sources win over an installed copy
    try:
        from sipwarden.sip import Request, parse_message
    except Exception as exc:
        return Parser("sipwarden", api, unavailable=f"not importable ({_error_text(exc)})")

    def extract(data: bytes) -> Fields:
        # Any: a missing header (None) raises AttributeError here, counted as an error
        m: Any = parse_message(data)
        kind: str | int
        if isinstance(m, Request):
            kind = m.method
            agent = m.headers.get("User-Agent")
        else:
            kind = m.status
            agent = m.headers.get("Server")
        cseq = m.cseq
        return (
            kind,
            m.call_id,
            cseq.number,
            cseq.method,
            m.from_.tag,
            m.to.tag,
            m.via[0].branch,
            agent,
        )

    return Parser("sipwarden", api, extract)


def load_sippy() -> Parser:
    api = (
        "bytes.decode() in the loop, then SipResponse(str) if it starts with 'SIP/2.0 ' "
        "else SipRequest(str) (as SipTransactionManager.handleIncoming does); getMethod() | "
        "getSCode()[0], str(getHFBody('call-id')), getHFBody('cseq').getCSeq(), "
        "getHFBody('from'|'to').getTag(), getHFBody('via').getBranch(), "
        "getHFBodys('user-agent'|'server'). Header bodies are parsed lazily on getHFBody."
    )
    try:
        from sippy.SipRequest import SipRequest
        from sippy.SipResponse import SipResponse
    except Exception as exc:
        return Parser("sippy", api, unavailable=f"not importable ({_error_text(exc)})")

    def extract(data: bytes) -> Fields:
        text = data.decode()
        if text.startswith("SIP/2.0 "):
            m = SipResponse(text)
            kind = m.getSCode()[0]
            agents = m.getHFBodys("server")
        else:
            m = SipRequest(text)
            kind = m.getMethod()
            agents = m.getHFBodys("user-agent")
        number, method = m.getHFBody("cseq").getCSeq()
        return (
            kind,
            str(m.getHFBody("call-id")),
            number,
            method,
            m.getHFBody("from").getTag(),
            m.getHFBody("to").getTag(),
            m.getHFBody("via").getBranch(),
            str(agents[0]) if agents else None,
        )

    return Parser("sippy", api, extract)


def load_sipmessage() -> Parser:
    api = (
        "sipmessage.Message.parse(bytes) (decodes itself); m.method | m.code "
        "(isinstance Response), m.call_id, m.cseq.sequence, m.cseq.method, "
        "m.from_address.parameters.get('tag'), m.to_address.parameters.get('tag'), "
        "m.via[0].parameters.get('branch'), m.user_agent | m.server. Typed accessors parse "
        "on access; m.via parses every Via value (no top-only accessor)."
    )
    try:
        from sipmessage import Message, Response
    except Exception as exc:
        return Parser("sipmessage", api, unavailable=f"not importable ({_error_text(exc)})")

    def extract(data: bytes) -> Fields:
        m = Message.parse(data)
        if isinstance(m, Response):
            kind: str | int = m.code
            agent = m.server
        else:
            kind = m.method
            agent = m.user_agent
        cseq = m.cseq
        return (
            kind,
            m.call_id,
            cseq.sequence,
            cseq.method,
            m.from_address.parameters.get("tag"),
            m.to_address.parameters.get("tag"),
            m.via[0].parameters.get("branch"),
            agent,
        )

    return Parser("sipmessage", api, extract)


def load_floor() -> Parser:
    api = (
        "bytes.partition(CRLFCRLF), decode, split lines, dict of lower-cased names (compact "
        "i/f/t/v mapped, first occurrence kept), str.partition/find for the fields."
    )
    return Parser("floor", api, floor_extract)


LOADERS: dict[str, Callable[[], Parser]] = {
    "sipwarden": load_sipwarden,
    "sippy": load_sippy,
    "sipmessage": load_sipmessage,
    "floor": load_floor,
}


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Result:
    parser: Parser
    messages: int = 0
    runs: list[float] = field(default_factory=list)
    errors: int = 0
    mismatches: int = 0
    field_mismatches: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    error_examples: list[str] = field(default_factory=list)
    by_kind: dict[str, float] = field(default_factory=dict)  # kind -> best µs/msg

    @property
    def seconds(self) -> float:
        return min(self.runs) if self.runs else float("nan")

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.runs else 0.0

    @property
    def clean(self) -> bool:
        return self.errors == 0 and self.mismatches == 0


def _loop(extract: Extract, corpus: Sequence[bytes]) -> int:
    """The timed loop, identical for every parser. Returns the number of messages that raised."""
    errors = 0
    for data in corpus:
        try:
            extract(data)
        except Exception:
            errors += 1
    return errors


def _timed(extract: Extract, corpus: Sequence[bytes], no_gc: bool) -> tuple[float, int]:
    if no_gc:
        gc.disable()
    try:
        start = time.perf_counter()
        errors = _loop(extract, corpus)
        return time.perf_counter() - start, errors
    finally:
        if no_gc:
            gc.enable()


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 70 else text[:67] + "..."


def verify(
    result: Result,
    extract: Extract,
    labeled: Sequence[tuple[str, bytes]],
    reference: Sequence[Fields],
) -> None:
    """Warm-up pass: run every message, count errors, compare fields with the floor's."""
    for i, (kind, data) in enumerate(labeled):
        try:
            got = extract(data)
        except Exception as exc:
            result.errors += 1
            if len(result.error_examples) < MAX_EXAMPLES:
                result.error_examples.append(f"#{i} {kind}: {_error_text(exc)}")
            continue
        want = reference[i]
        if got == want:
            continue
        result.mismatches += 1
        for name, g, w in zip(FIELD_NAMES, got, want, strict=False):
            if g != w:
                result.field_mismatches[name] += 1
                if len(result.examples) < MAX_EXAMPLES:
                    result.examples.append(f"#{i} {kind}: {name} = {_show(g)}, floor {_show(w)}")
        if len(got) != len(want):
            result.field_mismatches["(field count)"] += 1


def measure(
    parsers: Sequence[Parser],
    labeled: Sequence[tuple[str, bytes]],
    reference: Sequence[Fields],
    repeat: int,
    no_gc: bool,
) -> dict[str, Result]:
    """Warm-up/check pass per parser, then ``repeat`` rounds of one timed pass per parser.

    Rounds go round-robin over the parsers, so a burst of load from elsewhere on the machine
    hits every parser alike instead of one parser's whole measurement.
    """
    corpus = [data for _, data in labeled]
    results: dict[str, Result] = {}
    for parser in parsers:
        assert parser.extract is not None
        _progress(f"checking {parser.title} (warm-up pass)")
        results[parser.name] = result = Result(parser, messages=len(corpus))
        verify(result, parser.extract, labeled, reference)
    for n in range(repeat):
        for parser in parsers:
            assert parser.extract is not None
            _progress(f"timing {parser.title}, pass {n + 1}/{repeat}")
            seconds, _errors = _timed(parser.extract, corpus, no_gc)
            results[parser.name].runs.append(seconds)
    return results


def _progress(text: str) -> None:
    print(f"  {text} ...", file=sys.stderr, flush=True)


@dataclass
class KindRow:
    """One row of the per-kind table: the corpus labels it covers, and their size."""

    labels: set[str]
    count: int = 0
    total_bytes: int = 0


def kind_rows(labeled: Sequence[tuple[str, bytes]]) -> dict[str, KindRow]:
    """Rows per kind ("INVITE", "200 INVITE", ...), then all trunk and all compact messages."""
    rows: dict[str, KindRow] = {}
    trunk = KindRow(set())
    compact = KindRow(set())
    for label, data in labeled:
        base = label.replace(" trunk", "").replace(" compact", "")
        for row, member in (
            (rows.setdefault(base, KindRow(set())), True),
            (trunk, " trunk" in label),
            (compact, " compact" in label),
        ):
            if member:
                row.labels.add(label)
                row.count += 1
                row.total_bytes += len(data)
    ordered = dict(sorted(rows.items(), key=lambda kv: -kv[1].count))
    if trunk.count:
        ordered["(all trunk, 2 Via + RR)"] = trunk
    if compact.count:
        ordered["(all compact forms)"] = compact
    return ordered


def _per_label_ns(extract: Extract, labeled: Sequence[tuple[str, bytes]]) -> dict[str, int]:
    """Nanoseconds per corpus label, timing each message on its own, in corpus order."""
    clock = time.perf_counter_ns
    totals: dict[str, int] = {}
    for label, data in labeled:
        start = clock()
        try:  # noqa: SIM105 - no context manager inside the timed region
            extract(data)
        except Exception:
            pass
        elapsed = clock() - start
        totals[label] = totals.get(label, 0) + elapsed
    return totals


def _noop(data: bytes) -> Fields:
    return ()


def measure_by_kind(
    results: Sequence[Result],
    labeled: Sequence[tuple[str, bytes]],
    rows: dict[str, KindRow],
    repeat: int,
    no_gc: bool,
) -> None:
    """Best µs/msg per kind row.

    Every message is timed on its own, in corpus order, so that whatever a parser remembers
    between messages (caches) works as in the whole-corpus passes; the clock's own cost,
    measured on a no-op, is subtracted. Rounds go over every parser, as in :func:`measure`.
    """
    for n in range(repeat):
        _progress(f"timing per kind, pass {n + 1}/{repeat}")
        base = _per_label_ns(_noop, labeled)
        for result in results:
            extract = result.parser.extract
            assert extract is not None
            if no_gc:
                gc.disable()
            try:
                totals = _per_label_ns(extract, labeled)
            finally:
                if no_gc:
                    gc.enable()
            for name, row in rows.items():
                ns = sum(totals[label] - base[label] for label in row.labels)
                us = ns / row.count / 1000
                result.by_kind[name] = min(us, result.by_kind.get(name, us))


# --- reporting -------------------------------------------------------------------------------


def _table(rows: Sequence[Sequence[str] | str], right: Sequence[bool]) -> list[str]:
    """Align the cells; a plain string row (e.g. "x: not importable") is printed as is."""
    cells_rows = [row for row in rows if not isinstance(row, str)]
    widths = [max(len(row[i]) for row in cells_rows) for i in range(len(cells_rows[0]))]
    out = []
    for n, row in enumerate(rows):
        if isinstance(row, str):
            out.append(row)
            continue
        cells = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _mix(labeled: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
    methods: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    trunk = compact = with_body = 0
    total_bytes = 0
    for label, data in labeled:
        first = label.split()[0]
        if first.isdigit():
            statuses[first] += 1
        else:
            methods[first.partition("+")[0]] += 1
        trunk += " trunk" in label
        compact += " compact" in label
        with_body += not data.endswith(b"\r\n\r\n")
        total_bytes += len(data)
    return {
        "requests": dict(methods.most_common()),
        "responses": dict(sorted(statuses.items())),
        "trunk": trunk,
        "compact_forms": compact,
        "with_sdp_body": with_body,
        "bytes": total_bytes,
    }


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counter.items())


def targets(results: dict[str, Result], sipwarden: Parser | None) -> list[tuple[str, str]]:
    """(line, verdict) for the two targets."""
    t1 = f"target 1: sipwarden >= {TARGET_RATIO:g}x the faster of sippy and sipmessage"
    t2 = f"target 2: sipwarden >= {TARGET_RATE // 1000}k msgs/s"
    if sipwarden is None:
        return [(t1, "SKIP (sipwarden not selected)"), (t2, "SKIP (sipwarden not selected)")]
    if sipwarden.unavailable:
        why = f"FAIL (sipwarden {sipwarden.unavailable.split(' (')[0]})"
        return [(t1, why), (t2, why)]
    sw = results["sipwarden"]
    dirty = (
        ""
        if sw.clean
        else (f" - sipwarden had {sw.errors:,} errors and {sw.mismatches:,} mismatches")
    )
    peers = [results[p] for p in ("sippy", "sipmessage") if p in results and results[p].runs]
    if peers:
        fastest = max(peers, key=lambda r: r.rate)
        ratio = sw.rate / fastest.rate
        ok = ratio >= TARGET_RATIO and sw.clean
        v1 = f"{'PASS' if ok else 'FAIL'} ({ratio:.1f}x vs {fastest.parser.name}){dirty}"
    else:
        v1 = "SKIP (neither sippy nor sipmessage measured)"
    ok2 = sw.rate >= TARGET_RATE and sw.clean
    v2 = f"{'PASS' if ok2 else 'FAIL'} ({sw.rate:,.0f} msgs/s){dirty}"
    return [(t1, v1), (t2, v2)]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    ap.add_argument(
        "--messages",
        type=int,
        default=DEFAULT_MESSAGES,
        metavar="N",
        help=f"corpus size (default {DEFAULT_MESSAGES:,})",
    )
    ap.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes, best kept (default 3)")
    ap.add_argument(
        "--only",
        action="append",
        choices=PARSER_ORDER,
        metavar="PARSER",
        help=f"measure only this parser, repeatable ({', '.join(PARSER_ORDER)})",
    )
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    ap.add_argument(
        "--no-gc",
        action="store_true",
        help="disable the garbage collector during timed passes (all parsers)",
    )
    ap.add_argument(
        "--by-kind",
        action="store_true",
        help="also time every message kind separately (all measured parsers)",
    )
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is not met")
    args = ap.parse_args(argv)
    if args.messages <= 0 or args.repeat <= 0:
        ap.error("--messages and --repeat must be positive")
    selected = [p for p in PARSER_ORDER if not args.only or p in args.only]

    labeled = generate_labeled(args.messages, args.seed)
    corpus = [data for _, data in labeled]
    reference = [floor_extract(data) for data in corpus]  # the floor never fails on the corpus
    mix = _mix(labeled)
    gc.collect()
    gc.freeze()  # corpus and reference out of the collector's way, for every parser alike
    gc_mode = (
        "disabled during timed passes (all parsers alike)"
        if args.no_gc
        else "enabled; harness data frozen with gc.freeze() (all parsers alike)"
    )

    print("sipwarden parse benchmark (bench/parse.py)")
    print(
        f"python:  {platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})"
    )
    print(
        f"machine: processor={platform.processor() or platform.machine()!r}, "
        f"cpu_count={os.cpu_count()}, {platform.platform()}"
    )
    print(
        f"corpus:  {len(corpus):,} messages (seed {args.seed}), "
        f"{mix['bytes'] / len(corpus):.0f} bytes/msg average, {mix['with_sdp_body']:,} with "
        f"SDP, {mix['trunk']:,} trunk (2 Via + Record-Route), {mix['compact_forms']:,} in "
        f"compact form"
    )
    print(f"  requests:  {_counts(mix['requests'])}")
    print(f"  responses: {_counts(mix['responses'])}")
    print(
        f"timing:  single process, single thread, time.perf_counter; untimed warm-up pass "
        f"(also the field check), then best of {args.repeat} round-robin passes over the whole "
        f"corpus; "
        f"gc {gc_mode}"
    )
    print()

    parsers = {name: LOADERS[name]() for name in selected}
    runnable = [p for p in parsers.values() if p.extract is not None]
    results = measure(runnable, labeled, reference, args.repeat, args.no_gc)

    sw = results.get("sipwarden")
    rows: list[list[str] | str] = [
        [
            "parser",
            "messages",
            "seconds",
            "msgs/s",
            "µs/msg",
            "sipwarden÷row",
            "errors",
            "mismatches",
        ]
    ]
    for name, parser in parsers.items():
        if parser.unavailable:
            rows.append(f"{parser.title}: {parser.unavailable}")
            continue
        r = results[name]
        ratio = f"{sw.rate / r.rate:.2f}x" if sw and sw.runs and r.rate else "-"
        rows.append(
            [
                parser.title,
                f"{r.messages:,}",
                f"{r.seconds:.3f}",
                f"{r.rate:,.0f}",
                f"{r.seconds / r.messages * 1e6:.2f}",
                ratio,
                f"{r.errors:,}",
                f"{r.mismatches:,}",
            ]
        )
    for line in _table(rows, [False] + [True] * 7):
        print(line)
    print()
    verdicts = targets(results, parsers.get("sipwarden"))
    for line, verdict in verdicts:
        print(f"{line}: {verdict}")

    print()
    print("Agreement with the floor's fields (every message, warm-up pass):")
    for name, r in results.items():
        if name == "floor":
            continue
        if r.clean:
            print(f"  {r.parser.title}: all {r.messages:,} messages agree")
            continue
        fields = ", ".join(f"{k} {v:,}" for k, v in r.field_mismatches.most_common())
        print(
            f"  {r.parser.title}: {r.errors:,} raised, {r.mismatches:,} disagree"
            + (f" ({fields})" if fields else "")
        )
        for ex in r.error_examples + r.examples:
            print(f"    {ex}")

    auto = sw is not None and sw.runs and any(v.startswith("FAIL") for _, v in verdicts)
    if args.by_kind or auto:
        chosen = (
            list(results.values())
            if args.by_kind
            else [r for n, r in results.items() if n in ("sipwarden", "floor")]
        )
        krows_info = kind_rows(labeled)
        measure_by_kind(chosen, labeled, krows_info, args.repeat, args.no_gc)
        print()
        print(
            f"µs/msg per message kind (each message timed alone, in corpus order; best of "
            f"{args.repeat}){'' if args.by_kind else ', shown because a target failed'}:"
        )
        head = ["kind", "count", "bytes"] + [r.parser.title for r in chosen]
        show_share = sw is not None and sw in chosen
        if show_share:
            head.append("sipwarden time share")
        sw_total = sum(
            sw.by_kind[k] * row.count
            for k, row in krows_info.items()
            if sw is not None and show_share and not k.startswith("(")
        )
        krows: list[list[str] | str] = [head]
        for kind, row in krows_info.items():
            cells = [kind, f"{row.count:,}", f"{row.total_bytes / row.count:.0f}"]
            cells += [f"{r.by_kind[kind]:.2f}" for r in chosen]
            if sw is not None and show_share:
                share = sw.by_kind[kind] * row.count / sw_total if sw_total else 0.0
                cells.append("" if kind.startswith("(") else f"{share:.1%}")
            krows.append(cells)
        for line in _table(krows, [False] + [True] * (len(head) - 1)):
            print(line)

    print()
    print("APIs used:")
    for parser in parsers.values():
        print(f"  {parser.title}: {parser.api}")

    if args.json:
        payload = {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "machine": {
                "processor": platform.processor(),
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
            },
            "corpus": {"messages": len(corpus), "seed": args.seed, **mix},
            "repeat": args.repeat,
            "gc": gc_mode,
            "results": [
                {
                    "parser": p.name,
                    "available": p.unavailable is None,
                    "unavailable": p.unavailable,
                    "api": p.api,
                    **(
                        {}
                        if p.name not in results
                        else {
                            "messages": results[p.name].messages,
                            "runs_seconds": results[p.name].runs,
                            "best_seconds": results[p.name].seconds,
                            "msgs_per_s": results[p.name].rate,
                            "us_per_msg": results[p.name].seconds / results[p.name].messages * 1e6,
                            "sipwarden_over_this": (
                                sw.rate / results[p.name].rate if sw and sw.runs else None
                            ),
                            "errors": results[p.name].errors,
                            "mismatches": results[p.name].mismatches,
                            "field_mismatches": dict(results[p.name].field_mismatches),
                            "examples": results[p.name].error_examples + results[p.name].examples,
                            "us_per_msg_by_kind": results[p.name].by_kind,
                        }
                    ),
                }
                for p in parsers.values()
            ],
            "targets": [{"target": t, "verdict": v} for t, v in verdicts],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        print(f"\nJSON written to {args.json}")

    if args.check and any(v.startswith("FAIL") for _, v in verdicts):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
