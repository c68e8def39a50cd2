"""unauthorized: service used without authentication - calls accepted from untrusted clients and
requests relayed to foreign domains (conventions.md §1).

Theory of operation
-------------------
Both detectors judge what the *server* did, so they act on what the tracker matched: an
initial INVITE that was answered 180/183/2xx (:class:`CallEvent` ``RINGING``/``ANSWERED``), or a
request answered 18x/2xx (:class:`Transaction`). A request that carried no Authorization or
Proxy-Authorization and was accepted anyway is service given to whoever sent it - unless the
sender is a trunk or peer the operator trusts by IP, which is how most SIP interconnects work.
Only the operator knows those peers: list them in ``allow_sources``. With nothing configured the
detectors stay conservative (see each docstring), so that ordinary captures - where phones and
trunks are authenticated by IP - do not produce medium or higher findings.
"""

from __future__ import annotations

import ipaddress
from typing import ClassVar

from pydantic import Field, field_validator

from sipwarden.detect.base import Detector, DetectorConfig
from sipwarden.detect.finding import Evidence, Finding, RecommendedAction, Target
from sipwarden.detect.observation import Observation
from sipwarden.detect.registry import register
from sipwarden.detect.tables import SlidingWindowCounter, TableStats, TtlMap
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.detect.tracker import CallEvent, CallPhase, Transaction
from sipwarden.net import AddressKind, classify
from sipwarden.sip import SipParseError

__all__ = [
    "OpenRelay",
    "OpenRelayConfig",
    "UnauthenticatedCallAccepted",
    "UnauthenticatedCallAcceptedConfig",
]

#: Attacker-chosen strings put in summaries and indicators are cut to this length.
_MAX_TEXT_CHARS = 128
#: RFC 3261 §17.1.1.2 Timer B / §17.1.2.2 Timer F (64×T1): how long a request waits for the
#: first answer the tracker reports; the tracker forgets it after the same time.
_TIMER_F_S = 32.0


def _cut(text: str | None) -> str:
    return (text or "")[:_MAX_TEXT_CHARS]


def _accepted(status: int | None) -> bool:
    return status is not None and (status in {180, 183} or 200 <= status < 300)


# -- UnauthenticatedCallAccepted -----------------------------------------------------------------


class UnauthenticatedCallAcceptedConfig(DetectorConfig):
    window_s: float = Field(
        3600.0,
        gt=0,
        description=(
            "Sliding window, seconds, in which accepted unauthenticated calls from one public "
            "source are counted. 1 h as VoIPmonitor's CDR-based sequential-call `interval` "
            "(3600 s) and OpenSIPS ratelimit's `expire_time` (3600 s): toll-fraud runs through an "
            "open PBX last hours, not seconds."
        ),
    )
    calls_for_high: int = Field(
        10,
        ge=1,
        description=(
            "Accepted unauthenticated calls from one untrusted *public* source within the "
            "window that make the finding high. No published anchor for this signal; 10 by "
            "analogy with fail2ban's [asterisk] maxretry 10 and Elastic's 10 per extension. "
            "The benign corpus has at most 3 such calls from one public source, the "
            "212.32.250.134 scanner capture about 100 per hour."
        ),
    )
    max_sources: int = Field(
        100_000,
        ge=1,
        description=(
            "Most source IPs counted at once; the least recently seen is evicted first and "
            "counted in evictions (its count restarts if it comes back)."
        ),
    )
    block_ttl_s: int = Field(
        3600,
        ge=1,
        description=(
            "Suggested TEMP_BLOCK duration for a high finding, seconds; 1 h as the window (a "
            "source given free calls should lose them at least for as long as we looked)."
        ),
    )


@register
class UnauthenticatedCallAccepted(Detector):
    """An INVITE without credentials from an untrusted source was answered 180/183/2xx.

    Signal: the tracker's RINGING/ANSWERED phase of a call (initial INVITE only, re-INVITEs are
    not calls) none of whose INVITEs carried Authorization/Proxy-Authorization, whose source is
    not in ``allow_sources``; one hit per call, aggregated per source IP (the engine raises
    the episode to HIGH, with TEMP_BLOCK, at the ``calls_for_high``-th call).
    Why: a PBX or SBC that routes calls for anyone who asks is the door of most toll fraud
    (IRSF through open PBXs; the initconf 212.32.250.134 capture shows a scanner getting 180/200
    to international numbers from three servers).
    Severity, with nothing configured: calls from non-public addresses (RFC 1918/4193, CGNAT,
    loopback, documentation) are INFO - inside a network, unauthenticated calls between PBXs,
    gateways and phones trusted by IP are the norm (the Eyebeam, digium, heplify and FAX
    captures of the benign corpus all have them). From a public address, LOW per call - a
    trunk peer is also a public address - and HIGH once one public source has
    ``calls_for_high`` accepted calls in ``window_s``, a volume a single misconfigured phone
    does not reach but a fraud run does.
    Defaults' anchor: no open engine has this detector (anchors §1: only ABC Monitor's
    ``call_start`` / VoIPmonitor's per-IP limits come close); window 1 h as VoIPmonitor's
    sequential ``interval`` 3600 s, count 10 by analogy with fail2ban maxretry 10.
    Known false positives: SIP trunks and interconnect peers authenticated by IP - put them in
    ``allow_sources`` (then they are silent); a public-facing PBX that allows anonymous inbound
    calls to its DIDs by design (allow-list or disable).
    """

    id: ClassVar[str] = "unauthorized.unauthenticated_call_accepted"
    threat: ClassVar[Threat] = Threat.UNAUTHORIZED
    Config: ClassVar[type[DetectorConfig]] = UnauthenticatedCallAcceptedConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, UnauthenticatedCallAcceptedConfig)
        cfg = self.config
        self._cfg = cfg
        self._calls: SlidingWindowCounter[str] = SlidingWindowCounter(
            cfg.max_sources, cfg.window_s, cfg.calls_for_high
        )

    def observe(self, obs: Observation) -> list[Finding]:
        return []

    def on_call(self, event: CallEvent) -> list[Finding]:
        call = event.call
        # One hit per call: at the first 180/183, or at the 2xx of a call that never rang.
        if event.phase not in (CallPhase.RINGING, CallPhase.ANSWERED):
            return []
        if event.phase is CallPhase.ANSWERED and call.ringing is not None:
            return []  # already reported when it rang
        if call.authenticated or self.allowed(call.src.ip):
            return []
        cfg = self._cfg
        source = call.src.ip
        public = classify(source) is AddressKind.PUBLIC
        count = self._calls.add(source, event.ts) if public else 0
        status = call.final_status if event.phase is CallPhase.ANSWERED else None
        answer = str(status) if status is not None else "18x"
        if count >= cfg.calls_for_high:
            severity, confidence = Severity.HIGH, 75
            action: RecommendedAction | None = RecommendedAction("TEMP_BLOCK", cfg.block_ttl_s)
        elif public:
            severity, confidence, action = Severity.LOW, 40, RecommendedAction("MONITOR")
        else:
            severity, confidence, action = Severity.INFO, 30, None
        callee = _cut(call.callee)
        caller = _cut(call.caller)
        indicators = {
            "caller": caller,
            "callee": callee,
            "callee_host": _cut(call.callee_host),
            "answer": answer,
            "address_kind": classify(source).value,
            "user_agent": _cut(call.user_agent),
        }
        if public:
            # The counter keeps calls_for_high events per source (all the decision needs), so
            # from there on it can only say "at least".
            at_least = "≥" if count >= cfg.calls_for_high else ""
            indicators["calls_in_window"] = f"{at_least}{count}"
            indicators["window_s"] = f"{cfg.window_s:g}"
        return [
            Finding(
                self.id,
                self.threat,
                severity,
                confidence,
                f"unauthenticated call from {source} to {callee or '?'} accepted ({answer}) by "
                f"{call.dst.ip}",
                source,
                event.ts,
                event.ts,
                source=call.src,
                target=Target(call.dst.ip, call.dst.port, callee or None),
                indicators=indicators,
                evidence=Evidence()
                .add(call.first_frame or None, call.call_id or None)
                .add(event.frame or None, None),
                recommended_action=action,
            )
        ]

    def advance(self, now: float) -> list[Finding]:
        self._calls.expire(now)
        return []

    def next_deadline(self) -> float | None:
        return self._calls.next_expiry()

    def stats(self) -> TableStats:
        return self._calls.stats()

    def state_size(self) -> int:
        return self.stats().entries

    def evictions(self) -> int:
        return self.stats().evictions


# -- OpenRelay -----------------------------------------------------------------------------------


class OpenRelayConfig(DetectorConfig):
    local_domains: tuple[str, ...] = Field(
        (),
        description=(
            "Domains, IP addresses and CIDR networks this server is responsible for (its "
            "Request-URI hosts). A domain also covers its subdomains. Empty by default, and "
            "then the detector stays silent: without knowing the local domains every "
            "request looks foreign (no published anchor; Kamailio's `is_myself` / OpenSIPS "
            "`is_myself` need the same list, their `alias=` / `domain` table)."
        ),
    )
    methods: tuple[str, ...] = Field(
        ("INVITE", "MESSAGE"),
        description=(
            "Request methods judged (upper-case): calls (toll fraud through the relay) and "
            "MESSAGE (SIP spam). In-dialog requests are never judged - their Request-URI is "
            "the peer's Contact, foreign by nature."
        ),
    )
    max_pending: int = Field(
        100_000,
        ge=1,
        description=(
            "Most candidate requests (unauthenticated, untrusted, foreign Request-URI host) "
            "remembered while their answer is awaited (32 s, RFC 3261 Timer F); the least "
            "recently seen is evicted first and counted."
        ),
    )
    block_ttl_s: int = Field(
        3600,
        ge=1,
        description=(
            "Suggested TEMP_BLOCK duration for the relaying source, seconds; 1 h as "
            "unauthorized.unauthenticated_call_accepted."
        ),
    )

    @field_validator("local_domains")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(item.strip().lower().rstrip(".") for item in value if item.strip())


def _network(item: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(item.strip("[]"), strict=False)
    except ValueError:
        return None


@register
class OpenRelay(Detector):
    """Open relay: an out-of-dialog request to a foreign domain, from an untrusted client
    without credentials, was answered 18x/2xx by the server it was sent to.

    Signal: an initial (no To tag) request of ``methods`` without Authorization, whose
    Request-URI host is not in ``local_domains`` (nor the address of the server it was sent
    to), from a source not in ``allow_sources``, answered 180/183/2xx (the tracker's matched
    transaction). One hit per request, aggregated per source IP. Silent until
    ``local_domains`` is configured.
    Why: a proxy that forwards anyone's requests to any domain gives attackers free calls and
    a clean origin for spam and fraud; RFC 3261 §16.4 lets a proxy refuse requests for domains
    it is not responsible for, and operators lock this with ``is_myself``/domain checks.
    Severity: HIGH (confidence 70) - the operator declared what is local, a stranger's request
    for elsewhere was accepted.
    Defaults' anchor: no published default (Kamailio/OpenSIPS ``is_myself`` rely on the same
    operator-supplied list).
    Known false positives: a domain or alias missing from ``local_domains``; outbound proxies
    of trusted peers (``allow_sources``); servers whose Request-URI host is a DNS name that
    resolves to them but is not listed.
    """

    id: ClassVar[str] = "unauthorized.open_relay"
    threat: ClassVar[Threat] = Threat.UNAUTHORIZED
    Config: ClassVar[type[DetectorConfig]] = OpenRelayConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, OpenRelayConfig)
        cfg = self.config
        self._cfg = cfg
        self._methods = frozenset(m.upper() for m in cfg.methods)
        self._names = tuple(d for d in cfg.local_domains if _network(d) is None)
        self._networks = tuple(n for n in map(_network, cfg.local_domains) if n is not None)
        # (client IP, Call-ID, request time, frame) -> the foreign host asked for.
        self._pending: TtlMap[tuple[str, str, float, int], str] = TtlMap(
            cfg.max_pending, _TIMER_F_S
        )

    def is_local(self, host: str, server_ip: str) -> bool:
        """True when ``host`` (a Request-URI host) is one this server is responsible for."""
        host = host.lower().rstrip(".")
        if host.strip("[]") == server_ip:
            return True
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            address = None
        if address is not None:
            return any(address in network for network in self._networks)
        return any(host == d or host.endswith("." + d) for d in self._names)

    def observe(self, obs: Observation) -> list[Finding]:
        request = obs.request
        if (
            request is None
            or not self._cfg.local_domains
            or request.method not in self._methods
            or self.allowed(obs.src.ip)
        ):
            return []
        try:
            to = request.to
            if (to is not None and to.tag) or request.authorization:
                return []
            host = request.request_uri.host_lower
            call_id = _cut(request.call_id)
        except (SipParseError, ValueError):
            return []
        if not host or self.is_local(host, obs.dst.ip):
            return []
        self._pending.set((obs.src.ip, call_id, obs.ts, obs.frame), _cut(host), obs.ts)
        return []

    def on_transaction(self, tx: Transaction) -> list[Finding]:
        if not _accepted(tx.status) or tx.method not in self._methods:
            return []
        key = (tx.client.ip, tx.call_id, tx.request_ts, tx.request_frame)
        host = self._pending.pop(key, tx.response_ts)
        if host is None:
            return []
        user = _cut(tx.request_uri_user)
        return [
            Finding(
                self.id,
                self.threat,
                Severity.HIGH,
                70,
                f"open relay: {tx.method} from {tx.client.ip} to foreign domain {host} "
                f"accepted ({tx.status}) by {tx.server.ip}",
                tx.client.ip,
                tx.request_ts,
                tx.response_ts,
                source=tx.client,
                target=Target(tx.server.ip, tx.server.port, user or None),
                indicators={
                    "method": tx.method,
                    "foreign_host": host,
                    "status": str(tx.status),
                    "request_uri_user": user,
                },
                evidence=Evidence()
                .add(tx.request_frame or None, tx.call_id or None)
                .add(tx.response_frame or None, None),
                recommended_action=RecommendedAction("TEMP_BLOCK", self._cfg.block_ttl_s),
            )
        ]

    def advance(self, now: float) -> list[Finding]:
        self._pending.expire(now)
        return []

    def next_deadline(self) -> float | None:
        return self._pending.next_expiry()

    def stats(self) -> TableStats:
        return self._pending.stats()

    def state_size(self) -> int:
        return self.stats().entries

    def evictions(self) -> int:
        return self.stats().evictions
