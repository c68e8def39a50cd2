"""malformed: protocol violations and fuzzing (conventions.md §1)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from sipwarden.detect.base import Detector, DetectorConfig
from sipwarden.detect.finding import Finding, RecommendedAction
from sipwarden.detect.observation import Observation
from sipwarden.detect.registry import register
from sipwarden.detect.tables import SlidingWindowCounter, TtlMap
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.sip import Request, Response

__all__ = [
    "HeaderBomb",
    "HeaderBombConfig",
    "Oversize",
    "OversizeConfig",
    "ParserDefect",
    "ParserDefectConfig",
]


# -- repeat grading, shared by every malformed detector -------------------------------------------


class _RepeatOffenderConfig(DetectorConfig):
    window_s: float = Field(
        30.0,
        gt=0,
        description=(
            "Sliding window for counting a source's abusive messages, seconds. Default as "
            "the AudioCodes IDS example policy's 30 s interval (detection-anchors.md §2.7, "
            "'malformed rate')."
        ),
    )
    messages_per_window: int = Field(
        15,
        ge=1,
        description=(
            "Distinct abusive messages from one source within the window (a byte-identical "
            "retransmission is not counted) that raise the hit from low to high with a "
            "TEMP_BLOCK. Default as the AudioCodes example's alarm threshold "
            "15 / 30 s (it blocks above 25); one such message alone is only a low hit."
        ),
    )
    block_ttl_s: int = Field(
        60,
        ge=1,
        description=(
            "Suggested TEMP_BLOCK duration once a source reaches messages_per_window, "
            "seconds. Default as the AudioCodes example's 60 s block."
        ),
    )
    max_sources: int = Field(
        100_000,
        ge=1,
        description=(
            "Most source IPs counted at once, and most abusive messages remembered within the "
            "window to tell retransmissions (not counted) from new messages; the least "
            "recently seen is evicted first and counted in evictions."
        ),
    )


class _RepeatOffender(Detector):
    """Shared plumbing: count each source's abusive messages and grade the hit."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, _RepeatOffenderConfig)
        self._repeat_cfg = self.config
        self._counts: SlidingWindowCounter[str] = SlidingWindowCounter(
            self.config.max_sources, self.config.window_s, self.config.messages_per_window
        )
        # Hashes of (source, bytes) of the abusive messages in the window: a UDP retransmission
        # (RFC 3261 §17.1.1.2, up to 7 copies of an INVITE in 32 s) is the same message again,
        # so it is a hit but does not count towards the block threshold - else one call from a
        # benign phone with a broken header would nearly reach it. A message that did not
        # parse has no bytes in the observation and always counts.
        self._recent: TtlMap[int, bool] = TtlMap(self.config.max_sources, self.config.window_s)

    def _graded_hit(self, obs: Observation, summary: str, indicators: dict[str, str]) -> Finding:
        cfg = self._repeat_cfg
        message = obs.message
        fingerprint = hash((obs.src.ip, message.raw)) if message is not None else None
        if fingerprint is not None and self._recent.touch(fingerprint, obs.ts):
            count = self._counts.count(obs.src.ip, obs.ts)
        else:
            count = self._counts.add(obs.src.ip, obs.ts)
            if fingerprint is not None:
                self._recent.set(fingerprint, True, obs.ts)
        indicators = {**indicators, "messages_in_window": str(count)}
        if count >= cfg.messages_per_window:
            severity, confidence = Severity.HIGH, 85
            action = RecommendedAction("TEMP_BLOCK", cfg.block_ttl_s)
            summary = f"{summary}; {count} such messages in {cfg.window_s:g} s"
        else:
            severity, confidence, action = Severity.LOW, 70, RecommendedAction("MONITOR")
        return self.hit(
            obs, severity, confidence, summary, obs.src.ip, indicators=indicators, action=action
        )

    def advance(self, now: float) -> list[Finding]:
        self._counts.expire(now)
        self._recent.expire(now)
        return []

    def next_deadline(self) -> float | None:
        deadlines = (self._counts.next_expiry(), self._recent.next_expiry())
        return min((d for d in deadlines if d is not None), default=None)

    def state_size(self) -> int:
        return self._counts.state_size() + self._recent.state_size()

    def evictions(self) -> int:
        return self._counts.evictions + self._recent.evictions


class ParserDefectConfig(_RepeatOffenderConfig):
    """Only the repeat grading: every malformed message is a hit."""


@register
class ParserDefect(_RepeatOffender):
    """Messages that fail to parse or break RFC 3261 / RFC 4475 rules, per source.

    Signal: a SipParseError (the parser refused the message, including everything beyond
    ParseLimits), or a *violation* defect on a parsed message (sip/errors.py; tolerances such
    as bare-LF line ends or leading CRLFs are not reported). One low hit per message, high with
    TEMP_BLOCK once a source sends ``messages_per_window`` of them within ``window_s``.
    Why: fuzzers and broken or hostile stacks; Kamailio sanity and the AudioCodes IDS
    "malformed" rule reject the same (detection-anchors.md §2.4).
    Defaults' anchor: the AudioCodes IDS example (15 malformed / 30 s, block 60 s;
    detection-anchors.md §2.4 and §2.7 "malformed rate").
    Known false positives: a buggy but benign device, e.g. a phone writing IPv6 addresses
    without brackets (RFC 5118 §4.1) or ending a datagram without the empty line; it stays
    low unless it sends 15 such messages in 30 s (the allow-list silences it).
    """

    id: ClassVar[str] = "malformed.parser_defect"
    threat: ClassVar[Threat] = Threat.MALFORMED
    Config: ClassVar[type[DetectorConfig]] = ParserDefectConfig

    def observe(self, obs: Observation) -> list[Finding]:
        if self.allowed(obs.src.ip):
            return []
        if obs.error is not None:
            code, detail, codes = obs.error.code, obs.error.detail, obs.error.code
        elif obs.message is not None:
            violations = obs.message.violations
            if not violations:
                return []
            code, detail = violations[0].code, violations[0].detail
            codes = ",".join(sorted({violation.code for violation in violations}))
        else:
            return []
        return [
            self._graded_hit(
                obs,
                f"malformed SIP from {obs.src.ip}: {code} ({detail[:80]})",
                {"code": code, "codes": codes},
            )
        ]


# -- messages that parse but are abusive ---------------------------------------------------------
#
# The parser already refuses what is beyond ParseLimits (65535-byte message, 2048-byte header
# line, 128 headers, 70 Via hops, 512-byte Request-URI): those arrive as ``obs.error`` and are
# ParserDefect's hits. The detectors below judge only messages that *parsed*, against the
# stricter limits a hardened proxy enforces, so no message is reported twice.


class OversizeConfig(_RepeatOffenderConfig):
    max_message_bytes: int = Field(
        16384,
        ge=1,
        description=(
            "Largest SIP message (bytes on the wire). Default as Kamailio's default-config "
            "MSG_MAX_SIZE and sanity's message size check, 16384 (detection-anchors.md §2.4); "
            "the parser itself refuses only above ParseLimits.max_message_bytes (65535)."
        ),
    )
    max_header_bytes: int = Field(
        8192,
        ge=1,
        description=(
            "Largest start line plus header block, bytes. Default as Kamailio sanity's size "
            "check for all headers, 8192 (the parser refuses above 16384)."
        ),
    )
    max_body_bytes: int = Field(
        8192,
        ge=1,
        description="Largest body, bytes. Default as Kamailio sanity's body size check, 8192.",
    )
    max_uri_bytes: int = Field(
        256,
        ge=1,
        description=(
            "Longest Request-URI, From, To or Contact URI, bytes. Default as Kamailio "
            "sanity's per-URI size check, 256 (the parser refuses a Request-URI above 512)."
        ),
    )
    max_host_bytes: int = Field(
        255,
        ge=1,
        description=(
            "Longest host name in a request's Via sent-by, bytes. Default 255, the longest "
            "DNS name (RFC 1035 §2.3.4); a longer host cannot be resolved, only overflow "
            "buffers."
        ),
    )


@register
class Oversize(_RepeatOffender):
    """A parsed message larger than a hardened proxy accepts: whole, headers, body, URI, host.

    Signal: a message that parsed but exceeds one of Kamailio sanity's size checks (message
    16384, all headers 8192, body 8192, one URI 256) or carries a Via host longer than any
    DNS name; one low hit per message, high with TEMP_BLOCK once a source sends
    ``messages_per_window`` of them within ``window_s``.
    Why: oversize fields are how fuzzers and exploit attempts reach buffer and parser bugs
    (Zeek's long-path tests, kamailio/kamailio#4204); a well-behaved UA never needs them.
    Defaults' anchor: Kamailio sanity sizes (detection-anchors.md §2.4 and §2.7), RFC 1035's
    255-byte name; repeat grading as the AudioCodes IDS example (15 / 30 s, block 60 s).
    Known false positives: IMS messages with many P- headers can pass 8192 header bytes
    (raise max_header_bytes); a response echoes an oversize request's Via and is reported
    against the responder too.
    """

    id: ClassVar[str] = "malformed.oversize"
    threat: ClassVar[Threat] = Threat.MALFORMED
    Config: ClassVar[type[DetectorConfig]] = OversizeConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, OversizeConfig)
        cfg = self._cfg = self.config
        self._smallest_size_limit = min(
            cfg.max_message_bytes, cfg.max_header_bytes, cfg.max_body_bytes
        )
        self._shortest_field_limit = min(cfg.max_uri_bytes, cfg.max_host_bytes)

    def observe(self, obs: Observation) -> list[Finding]:
        message = obs.message
        if message is None or self.allowed(obs.src.ip):
            return []
        excess = self._first_excess(obs, message)
        if excess is None:
            return []
        what, size, limit = excess
        return [
            self._graded_hit(
                obs,
                f"oversize SIP from {obs.src.ip}: {what} is {size} bytes (limit {limit})",
                {"code": "oversize", "limit": what, "size": str(size), "max": str(limit)},
            )
        ]

    def _first_excess(
        self, obs: Observation, message: Request | Response
    ) -> tuple[str, int, int] | None:
        cfg = self._cfg
        if obs.size > self._smallest_size_limit:
            body = len(message.body)
            for what, size, limit in (
                ("message", obs.size, cfg.max_message_bytes),
                ("headers", len(message.raw) - body, cfg.max_header_bytes),
                ("body", body, cfg.max_body_bytes),
            ):
                if size > limit:
                    return what, size, limit
        is_request = isinstance(message, Request)
        if isinstance(message, Request) and len(message.uri) > cfg.max_uri_bytes:
            return "Request-URI", len(message.uri), cfg.max_uri_bytes
        # One pass over the fields; only a value longer than a limit can hold a field over it,
        # so the common message costs a length test per field.
        shortest = self._shortest_field_limit
        for key, _, value in message.headers.fields:
            if len(value) <= shortest:
                continue
            if key == "via":
                if is_request:
                    for host in _via_hosts(value):
                        if len(host) > cfg.max_host_bytes:
                            return "Via host", len(host), cfg.max_host_bytes
            elif key in _URI_LABELS:
                uri = _uri_text(value)
                if len(uri) > cfg.max_uri_bytes:
                    return _URI_LABELS[key], len(uri), cfg.max_uri_bytes
        return None


_URI_LABELS = {"from": "From URI", "to": "To URI", "contact": "Contact URI"}


def _uri_text(value: str) -> str:
    """The URI inside <...>, or the value itself up to ``;`` in the bare form: an upper bound
    read without the grammar (a quoted display name may contain "<", hence rfind)."""
    start, end = value.rfind("<"), value.rfind(">")
    return value[start + 1 : end] if 0 <= start < end else value.split(";", 1)[0]


def _via_hosts(value: str) -> list[str]:
    """Sent-by hosts of one Via line, read without the grammar (a malformed hop still counts):
    the text after ``SIP/2.0/<transport>`` up to ``;``, ``:`` port or ``,``."""
    hosts = []
    for hop in value.split(","):
        parts = hop.strip().split(None, 1)
        if len(parts) == 2:
            sent_by = parts[1].split(";", 1)[0].strip()
            if sent_by.startswith("["):
                host = sent_by[: sent_by.find("]") + 1] if "]" in sent_by else sent_by
            else:
                host = sent_by.rsplit(":", 1)[0]
            hosts.append(host)
    return hosts


#: Headers whose values are comma-separated lists of hops or routes: entries, not lines, count.
_HOP_HEADERS = frozenset({"via", "route", "record-route", "path"})


class HeaderBombConfig(_RepeatOffenderConfig):
    max_headers: int = Field(
        64,
        ge=1,
        description=(
            "Most header fields (lines) in one message. No published anchor (Kamailio sanity "
            "caps bytes, not fields); 64 is half the parser's refusal limit (128) and nearly "
            "three times the largest benign message in the shared corpus (23 fields, an "
            "Avaya trunk INVITE)."
        ),
    )
    max_entries_per_header: int = Field(
        20,
        ge=1,
        description=(
            "Most entries of one header name: lines, plus comma-separated hops for Via, "
            "Route, Record-Route and Path. No published anchor; real paths cross a handful of "
            "proxies (the corpus maximum is 10 Via hops, in Zeek's long-path test) and the "
            "parser refuses above 70 Via hops (RFC 3261 Max-Forwards)."
        ),
    )


@register
class HeaderBomb(_RepeatOffender):
    """A parsed message with more header fields, or repeats of one header, than any stack sends.

    Signal: more than ``max_headers`` header lines, or more than ``max_entries_per_header``
    entries of one header (Via/Route/Record-Route/Path hops counted per comma); one low hit per
    message, high with TEMP_BLOCK once a source sends ``messages_per_window`` of them within
    ``window_s``.
    Why: header bombs make parsers and proxies spend memory and CPU per entry (and amplify when
    a proxy copies Via/Record-Route into every response); fuzzers use them to find limits.
    Defaults' anchor: none published for counts (see each field); repeat grading as the
    AudioCodes IDS example (15 / 30 s, block 60 s).
    Known false positives: IMS/VoLTE messages with many P- and Feature-Caps headers approach
    the field count; raise ``max_headers`` for such trunks.
    """

    id: ClassVar[str] = "malformed.header_bomb"
    threat: ClassVar[Threat] = Threat.MALFORMED
    Config: ClassVar[type[DetectorConfig]] = HeaderBombConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, HeaderBombConfig)
        self._cfg = self.config

    def observe(self, obs: Observation) -> list[Finding]:
        message = obs.message
        if message is None or self.allowed(obs.src.ip):
            return []
        cfg = self._cfg
        fields = message.headers.fields
        if len(fields) > cfg.max_headers:
            return [
                self._graded_hit(
                    obs,
                    f"header bomb from {obs.src.ip}: {len(fields)} header fields "
                    f"(limit {cfg.max_headers})",
                    {"code": "too_many_headers", "count": str(len(fields))},
                )
            ]
        limit = cfg.max_entries_per_header
        # Fast path: with no more fields than the limit, only comma lists of hops can pass it.
        if len(fields) <= limit:
            for key, _, value in fields:
                if "," in value and key in _HOP_HEADERS:
                    break
            else:
                return []
        entries: dict[str, int] = {}
        names: dict[str, str] = {}
        for key, name, value in fields:
            entries[key] = entries.get(key, 0) + (
                1 + value.count(",") if key in _HOP_HEADERS else 1
            )
            names.setdefault(key, name)
        key, count = max(entries.items(), key=lambda item: item[1], default=("", 0))
        if count <= limit:
            return []
        header = names[key][:64]
        return [
            self._graded_hit(
                obs,
                f"header bomb from {obs.src.ip}: {count} {header} entries "
                f"(limit {cfg.max_entries_per_header})",
                {"code": "repeated_header", "header": header, "count": str(count)},
            )
        ]
