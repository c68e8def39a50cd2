"""The gateway's policy: one pure decision per message - forward, reject, drop or tarpit.

Pure like ``detect/``: no asyncio, sockets or clocks; ``now`` is passed in. The proxy calls
:meth:`Policy.decide` with the observation, a view of the blocklist and the findings the engine
produced for this very observation, then :meth:`Policy.blocklist_entries` to learn which bans to
add to the store.

The policy decides *that* a source is banned, for which base TTL (the finding's suggested TTL or
``default_ban_s``) and why; how long a *repeat* ban lasts is the blocklist store's single
escalation rule (``store/base.py``: fail2ban ``bantime.increment``, capped), applied with the
store's ban history - shared by every gateway worker when the store is the SQLite file.

Theory of operation
-------------------

Checks run cheapest and most certain first; the first that refuses decides:

1. **Parse failure**: an unparsable request is answered (400, or the parser's status hint: 413,
   414, 483, 505, 513) only when its bytes still look like a request with the five headers a
   response copies (RFC 3261 §8.2.6.2); anything else, and every ACK (never answered, §17.1.1.3),
   is dropped silently.
2. **Blocklist**: a blocklisted source is dropped, whatever it sends (Kamailio's default config:
   ``$sht(ipban=>$si)`` → ``exit``).
3. **Per-message hygiene** - for every source, trusted or not (a spoofed trusted address must
   not be a free pass, dOpensource/dsiprouter#148): size limits (513/413/414), RFC violations
   the gateway enforces (400), methods outside the allow-list (405, least functionality),
   Max-Forwards 0 (483), a configured own sent-by already present (482; the proxy's own loop
   check is the spiral-aware one), and findings of the
   ``injection`` and ``malformed`` families for this message (403 / drop).
4. **Untrusted only**: scanner findings (drop, or tarpit/403 by config), a high-severity finding
   recommending TEMP_BLOCK/BLOCK for this source (dropped: the gateway is banning it now), then
   the per-source and per-target (Request-URI user) token buckets.

Responses are forwarded unless they fail to parse or come from a blocklisted source: the
upstream's answers are not second-guessed (routing them by Via is the proxy's job).

Trusted peers are never put on the blocklist by :meth:`Policy.blocklist_entries`: over UDP a
source address is free to forge, and banning a trunk because someone spoofed it is the denial of
service the attacker wanted. A ban added by hand for a trusted address is honoured.

Token buckets, the policy's only state, are bounded (``TtlMap``): an entry lives for exactly the
time its bucket needs to refill, so forgetting it (expiry) is the same as a full bucket and only
an *eviction* under a hostile key space loses state - counted in :meth:`Policy.evictions`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from sipwarden.detect.finding import Finding
from sipwarden.detect.networks import NetworkList, NetworkSet
from sipwarden.detect.observation import Observation
from sipwarden.detect.tables import TableStats, TtlMap
from sipwarden.detect.taxonomy import Severity
from sipwarden.gateway.verdict import Drop, DropReason, Forward, Reject, Tarpit, Verdict
from sipwarden.sip import Request, SipParseError

__all__ = [
    "BlockOrder",
    "BlockView",
    "Policy",
    "PolicyConfig",
    "RateLimitConfig",
]

#: Attacker-chosen strings kept as table keys are cut to this many characters.
MAX_KEY_CHARS = 128

#: Action codes of findings that ban the source (conventions.md: FS.38 recommended actions).
BLOCK_ACTIONS = frozenset({"TEMP_BLOCK", "BLOCK"})

#: Detectors whose hit means "a scanning tool sent this" (recon.py).
SCANNER_DETECTORS = frozenset({"recon.scanner_user_agent", "recon.scanner_fingerprint"})


class BlockView(Protocol):
    """What the policy needs of the blocklist store: is ``ip`` banned at ``now``?"""

    def is_blocked(self, ip: str, now: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class BlockOrder:
    """A ban the gateway should add to its blocklist store as an ``origin="finding"`` entry.

    ``ttl_s`` is the base TTL: the store escalates it on repeat (``store.base.plan_add``);
    ``reason`` is the detector id, ``finding_id`` the finding's stable id.
    """

    ip: str
    ttl_s: float
    reason: str
    finding_id: str | None = None


class RateLimitConfig(BaseModel):
    """One family of token buckets (per source IP, or per Request-URI user)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Apply this limit.")
    rate_per_s: float = Field(gt=0, description="Tokens added per second (sustained rate).")
    burst: float = Field(ge=1, description="Bucket size: requests allowed back to back.")
    max_entries: int = Field(
        100_000, ge=1, description="Buckets kept at once; the least recently used is evicted."
    )
    action: Literal["drop", "reject"] = Field(
        description="What an empty bucket does: silent drop, or 503 with Retry-After."
    )
    retry_after_s: int = Field(
        5,
        ge=0,
        description="Retry-After of the 503; 5 s as the Kamailio ratelimit documentation example.",
    )


class PolicyConfig(BaseModel):
    """Gateway policy settings. Every default cites detection-anchors.md or says why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trusted_peers: NetworkList = Field(
        (),
        description=(
            "Peers (IPs/CIDRs) exempt from rate limits, scanner checks and automatic bans, but "
            "never from malformed/injection/size/method checks (a source address can be "
            "spoofed; dOpensource/dsiprouter#148). Empty: nothing trusted until configured, as "
            "Kamailio permissions and fail2ban ignoreip."
        ),
    )
    allowed_methods: tuple[str, ...] = Field(
        (
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "OPTIONS",
            "REGISTER",
            "PRACK",
            "UPDATE",
            "INFO",
            "SUBSCRIBE",
            "NOTIFY",
            "REFER",
            "MESSAGE",
            "PUBLISH",
        ),
        min_length=1,
        description=(
            "Methods forwarded; others get 405 (least functionality). No published anchor: the "
            "methods of RFC 3261 and the extensions a voice core uses (3262, 3311, 6086, 6665, "
            "3515, 3428, 3903); narrow it to what the upstream serves."
        ),
    )
    max_message_bytes: int = Field(
        16384,
        ge=1,
        description="Larger messages get 513; 16384 as Kamailio's default-config MSG_MAX_SIZE.",
    )
    max_body_bytes: int = Field(
        8192, ge=1, description="Larger bodies get 413; 8192 as Kamailio sanity's body size."
    )
    max_uri_bytes: int = Field(
        512,
        ge=1,
        description="Longer Request-URIs get 414; 512 as Kamailio's default-config RURI_MAX_SIZE.",
    )
    rejected_defects: tuple[str, ...] = Field(
        (
            "missing_mandatory_header",
            "cseq_method_mismatch",
            "content_length_mismatch",
            "duplicate_content_length",
            "value_out_of_range",
        ),
        description=(
            "Defect codes (sip/errors.py) that get a request 400: the RFC 3261 checks of "
            "Kamailio sanity's default_checks=3047 (required headers, CSeq method and number, "
            "Content-Length, Expires). Left out: a body without Content-Length (legal over "
            "UDP, RFC 3261 §20.14) and URI parsing (sanity flag 1024, not in that default): "
            "phones writing IPv6 without brackets (RFC 5118 §4.1) are benign and a stateless "
            "gateway does not route on the Request-URI. Tolerances (bare LF …) never count."
        ),
    )
    own_sent_by: tuple[str, ...] = Field(
        (),
        description=(
            "The gateway's own Via sent-by values (host or host:port); a request already "
            "carrying one gets 482 - any such Via, so it also refuses spirals. Empty (the "
            "default): the proxy's own check applies, which tells a loop from a spiral by "
            "the loop digest in its branch (RFC 3261 §16.3 item 4, §16.6 step 8)."
        ),
    )
    min_injection_severity: Severity = Field(
        Severity.MEDIUM,
        description=(
            "injection.* findings at or above this severity get the request 403. Medium: the "
            "injection detector grades SQL/script/command high and format strings and encoded "
            "CRLF medium; both harm whatever stores or logs the field. No published anchor "
            "(no ET SIP-SQLi rule; secfilter rejects on quote characters alone)."
        ),
    )
    min_malformed_severity: Severity = Field(
        Severity.HIGH,
        description=(
            "malformed.* findings at or above this severity drop the message: high means a "
            "repeat offender (AudioCodes IDS example, 15 malformed in 30 s). Single defects are "
            "judged by rejected_defects and the size limits."
        ),
    )
    scanner_action: Literal["drop", "reject", "tarpit"] = Field(
        "drop",
        description=(
            "What a scanner finding does to its request: silent drop (Kamailio default config "
            "drops scanner User-Agents), 403, or tarpit. Tarpit is off by default: each held "
            "request is a timer in the gateway, a memory lever under a flood, while a silent "
            "drop already costs the scanner its retransmission timeouts."
        ),
    )
    tarpit_delay_s: float = Field(
        30.0,
        gt=0,
        description=(
            "How long a tarpitted request is held before the drop. No published anchor: 30 s "
            "outlasts an INVITE client transaction's Timer B (64*T1 = 32 s) in spirit."
        ),
    )
    min_block_severity: Severity = Field(
        Severity.HIGH,
        description=(
            "Findings recommending TEMP_BLOCK/BLOCK ban their source only at or above this "
            "severity (benign traffic never reaches high; conventions.md §1)."
        ),
    )
    default_ban_s: float = Field(
        300.0,
        gt=0,
        description=(
            "Base ban when a TEMP_BLOCK/BLOCK gives no TTL; 300 s as Kamailio's default-config "
            "ban (htable autoexpire; detection-anchors §2.7). A repeat is escalated by the "
            "blocklist store (BlocklistSettings: x2 per repeat, capped at one day)."
        ),
    )
    per_source: RateLimitConfig = Field(
        default_factory=lambda: RateLimitConfig(rate_per_s=15.0, burst=30.0, action="drop"),
        description=(
            "Token bucket per source IP: 15/s sustained, 30 back to back - pike's defaults (30 "
            "requests per 2 s sampling unit). Silent drop as pike in Kamailio's default config "
            "(answering a spoofed flood would reflect it)."
        ),
    )
    per_target: RateLimitConfig = Field(
        default_factory=lambda: RateLimitConfig(rate_per_s=1.0, burst=20.0, action="reject"),
        description=(
            "Token bucket per Request-URI user: 20 back to back then 1/s. No published anchor "
            "for a per-user rate (ABC Monitor's uri limits are server-side); 503 + Retry-After "
            "as the Kamailio ratelimit example, since the callers of a flooded user are "
            "mostly legitimate."
        ),
    )
    rate_limit_exempt_methods: tuple[str, ...] = Field(
        ("ACK", "CANCEL", "BYE", "PRACK"),
        description=(
            "Methods never rate limited: they complete or end transactions and calls already "
            "admitted; refusing them leaves calls hanging. No published anchor (Kamailio "
            "ratelimit is configured per method in script)."
        ),
    )


class _Buckets:
    """Token buckets keyed by attacker-chosen strings, bounded by a TtlMap.

    An entry's TTL is the time an empty bucket needs to refill; once it expires the bucket is
    full, which is what a missing entry means - expiry loses nothing."""

    __slots__ = ("_burst", "_rate", "table")

    def __init__(self, cfg: RateLimitConfig) -> None:
        self._rate = cfg.rate_per_s
        self._burst = cfg.burst
        self.table: TtlMap[str, tuple[float, float]] = TtlMap(
            cfg.max_entries, cfg.burst / cfg.rate_per_s
        )

    def take(self, key: str, now: float) -> bool:
        """Spend one token for ``key`` at ``now``; False when the bucket is empty."""
        state = self.table.get(key, now)
        if state is None:
            tokens = self._burst
        else:
            tokens, last = state
            tokens = min(self._burst, tokens + max(0.0, now - last) * self._rate)
        if tokens < 1.0:
            # Not refreshed on refusal: the entry keeps its deadline, so a flood cannot keep
            # a bucket it is not being served from alive longer than its refill time.
            return False
        self.table.set(key, (tokens - 1.0, now), now)
        return True


# A request line, then the headers a response copies (RFC 3261 §8.2.6.2). Searched in the first
# bytes only, with compact forms (v, f, t, i).
_REQUEST_LINE = re.compile(rb"\A(?:\r?\n)*[A-Za-z]{1,32} [^\s]{1,1024} SIP/2\.0\r?\n")
_ANSWERABLE = tuple(
    re.compile(rb"\n(?:" + names + rb")[ \t]*:", re.I)
    for names in (rb"via|v", rb"from|f", rb"to|t", rb"call-id|i", rb"cseq")
)
_ANSWERABLE_SCAN_BYTES = 8192


def looks_answerable(raw: bytes) -> bool:
    """True when unparsable ``raw`` still looks like a request a 4xx can be built for."""
    head = raw[:_ANSWERABLE_SCAN_BYTES]
    if _REQUEST_LINE.match(head) is None or head.lstrip(b"\r\n").startswith(b"ACK "):
        return False
    return all(pattern.search(head) is not None for pattern in _ANSWERABLE)


_PARSE_REASONS = {
    413: DropReason.TOO_LARGE,
    414: DropReason.TOO_LARGE,
    513: DropReason.TOO_LARGE,
    483: DropReason.TOO_MANY_HOPS,
}


class Policy:
    """Decides each message's fate (:meth:`decide`) and the bans findings call for
    (:meth:`blocklist_entries`). Holds only bounded state: token buckets."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = cfg = config if config is not None else PolicyConfig()
        self._trusted = NetworkSet(cfg.trusted_peers)
        self._methods = frozenset(m.upper() for m in cfg.allowed_methods)
        self._rejected_defects = frozenset(cfg.rejected_defects)
        self._exempt = frozenset(m.upper() for m in cfg.rate_limit_exempt_methods)
        self._own = frozenset(s.lower() for s in cfg.own_sent_by)
        self._source = _Buckets(cfg.per_source) if cfg.per_source.enabled else None
        self._target = _Buckets(cfg.per_target) if cfg.per_target.enabled else None

    # -- state -----------------------------------------------------------------------------

    def trusted(self, ip: str) -> bool:
        return ip in self._trusted

    @property
    def allow_header(self) -> str:
        """The value of the ``Allow`` header a 405 must carry (RFC 3261 §21.4.6)."""
        return ", ".join(self.config.allowed_methods)

    def _tables(self) -> list[TtlMap[str, tuple[float, float]]]:
        return [b.table for b in (self._source, self._target) if b is not None]

    def state_size(self) -> int:
        return sum(t.state_size() for t in self._tables())

    def evictions(self) -> int:
        return sum(t.evictions for t in self._tables())

    def stats(self) -> TableStats:
        return TableStats.total(self._tables())

    def advance(self, now: float) -> None:
        """Forget buckets that refilled (call periodically)."""
        for table in self._tables():
            table.expire(now)

    # -- decisions -------------------------------------------------------------------------

    def decide(
        self,
        obs: Observation,
        now: float,
        blocked: BlockView | Callable[[str, float], bool],
        findings: Sequence[Finding] = (),
        raw: bytes = b"",
    ) -> Verdict:
        """The verdict for ``obs``. ``findings`` are the engine's hits for this observation;
        ``raw`` the received bytes, used only to judge an unparsable message answerable."""
        is_blocked = blocked.is_blocked if not callable(blocked) else blocked
        src = obs.src.ip
        message = obs.message
        if message is None:
            return self._unparsable(obs.error, raw, is_blocked(src, now))
        if is_blocked(src, now):
            return Drop(DropReason.BLOCKLISTED)
        if not isinstance(message, Request):
            return Forward()
        verdict = self._hygiene(obs, message, findings)
        if verdict is None and not self.trusted(src):
            verdict = self._untrusted(obs, message, findings, now)
        if verdict is None:
            return Forward()
        if isinstance(verdict, Reject) and message.method == "ACK":
            return Drop(verdict.reason)  # RFC 3261 §17: an ACK is never answered
        return verdict

    def _unparsable(self, error: SipParseError | None, raw: bytes, blocked: bool) -> Verdict:
        hint = error.status_hint if error is not None else 400
        reason = _PARSE_REASONS.get(hint, DropReason.MALFORMED)
        if blocked:
            return Drop(DropReason.BLOCKLISTED)
        if raw and looks_answerable(raw):
            return Reject(hint, reason)
        return Drop(reason)

    def _hygiene(
        self, obs: Observation, request: Request, findings: Sequence[Finding]
    ) -> Verdict | None:
        """Checks that apply to every source, trusted or not."""
        cfg = self.config
        if obs.size > cfg.max_message_bytes:
            return Reject(513, DropReason.TOO_LARGE)
        if len(request.body) > cfg.max_body_bytes:
            return Reject(413, DropReason.TOO_LARGE)
        if len(request.uri) > cfg.max_uri_bytes:
            return Reject(414, DropReason.TOO_LARGE)
        if request.method.upper() not in self._methods:
            return Reject(405, DropReason.METHOD_NOT_ALLOWED)
        try:
            if any(d.code in self._rejected_defects for d in request.defects):
                return Reject(400, DropReason.MALFORMED)
            if self._own and any(v.sent_by.lower() in self._own for v in request.via):
                return Reject(482, DropReason.LOOP)
            max_forwards = request.max_forwards
        except SipParseError:
            return Reject(400, DropReason.MALFORMED)
        if max_forwards is not None and max_forwards <= 0:
            return Reject(483, DropReason.TOO_MANY_HOPS)
        src = obs.src.ip
        for finding in _about(findings, src):
            family = finding.detector.split(".", 1)[0]
            rank = finding.severity.rank
            if family == "injection" and rank >= cfg.min_injection_severity.rank:
                return Reject(403, DropReason.INJECTION)
            if family == "malformed" and rank >= cfg.min_malformed_severity.rank:
                return Drop(DropReason.MALFORMED)
        return None

    def _untrusted(
        self, obs: Observation, request: Request, findings: Sequence[Finding], now: float
    ) -> Verdict | None:
        cfg = self.config
        src = obs.src.ip
        about = _about(findings, src)
        if any(f.detector in SCANNER_DETECTORS for f in about):
            if cfg.scanner_action == "tarpit":
                return Tarpit(DropReason.SCANNER, cfg.tarpit_delay_s)
            if cfg.scanner_action == "reject":
                return Reject(403, DropReason.SCANNER)
            return Drop(DropReason.SCANNER)
        if any(self._bans_source(f) for f in about):
            return Drop(DropReason.BLOCKLISTED)
        if request.method.upper() in self._exempt:
            return None
        if self._source is not None and not self._source.take(src[:MAX_KEY_CHARS], now):
            return _refusal(cfg.per_source, DropReason.RATE_LIMITED_SOURCE)
        if self._target is not None:
            user = _target_user(request)
            if user is not None and not self._target.take(user, now):
                return _refusal(cfg.per_target, DropReason.RATE_LIMITED_TARGET)
        return None

    # -- bans ------------------------------------------------------------------------------

    def _bans_source(self, finding: Finding) -> bool:
        action = finding.recommended_action
        return (
            action is not None
            and action.action_code in BLOCK_ACTIONS
            and finding.severity.rank >= self.config.min_block_severity.rank
        )

    def blocklist_entries(self, findings: Sequence[Finding]) -> list[BlockOrder]:
        """Bans for the findings that recommend TEMP_BLOCK/BLOCK at or above
        ``min_block_severity``: one per source IP (the first finding names it), never a
        trusted peer, for the finding's suggested TTL or ``default_ban_s`` (the store stamps
        the time and escalates repeats)."""
        orders: dict[str, BlockOrder] = {}
        for finding in findings:
            if not self._bans_source(finding) or finding.source is None:
                continue
            ip = finding.source.ip
            if ip in orders or self.trusted(ip):
                continue
            action = finding.recommended_action
            ttl = action.suggested_ttl_seconds if action is not None else None
            orders[ip] = BlockOrder(
                ip,
                float(ttl) if ttl else self.config.default_ban_s,
                finding.detector,
                finding.id,
            )
        return list(orders.values())


def _about(findings: Sequence[Finding], src: str) -> list[Finding]:
    """The findings that judge ``src`` (a hit keyed on a target is not about the sender)."""
    return [f for f in findings if f.source is not None and f.source.ip == src]


def _target_user(request: Request) -> str | None:
    try:
        user = request.request_uri.user
    except SipParseError:
        return None
    return user[:MAX_KEY_CHARS] if user else None


def _refusal(cfg: RateLimitConfig, reason: DropReason) -> Verdict:
    if cfg.action == "reject":
        return Reject(503, reason, cfg.retry_after_s)
    return Drop(reason)
