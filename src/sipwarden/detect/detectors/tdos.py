"""tdos: telephony denial of service - floods per source, fan-in on one target, call floods
(conventions.md §1; defaults from shared/reference/detection-anchors.md §2.1 and §2.7).

Every detector here counts in the bounded tables of :mod:`sipwarden.detect.tables` (source IPs,
Request-URIs and callee users are chosen by the sender) and rate-limits its own hits: one hit
when a key's count reaches the threshold, then at most one per window while the key stays at or
over it. The engine merges those hits into one finding per episode whose ``count`` is the number
of windows found over the threshold.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from pydantic import Field

from sipwarden.detect.base import Detector, DetectorConfig
from sipwarden.detect.finding import Finding, RecommendedAction, Target
from sipwarden.detect.observation import Observation
from sipwarden.detect.registry import register
from sipwarden.detect.tables import DistinctCounter, SlidingWindowCounter, TableStats, TtlMap
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.detect.tracker import Transaction
from sipwarden.sip import Request, SipParseError

__all__ = [
    "InviteRatePerTarget",
    "InviteRatePerTargetConfig",
    "RegistrationStorm",
    "RegistrationStormConfig",
    "RequestFlood",
    "RequestFloodConfig",
    "TargetFanIn",
    "TargetFanInConfig",
]

_MAX_INDICATOR = 200
#: Attacker-chosen strings kept in tables (AORs) are cut to this length.
_MAX_KEY_CHARS = 128


class _Throttle:
    """Which keys had a hit in the last ``window_s`` (so the next one waits a window)."""

    __slots__ = ("_last",)

    def __init__(self, max_entries: int, window_s: float) -> None:
        self._last: TtlMap[str, float] = TtlMap(max_entries, window_s)

    def allow(self, key: str, now: float) -> bool:
        """True (and remembered) unless ``key`` had a hit less than a window ago."""
        if self._last.get(key, now) is not None:
            return False
        self._last.set(key, now, now)
        return True

    @property
    def table(self) -> TtlMap[str, float]:
        return self._last


def _ruri_user_host(request: Request) -> tuple[str | None, str] | None:
    """(user, host) of the Request-URI, user %-unescaped and host lower-cased; None if bad."""
    try:
        uri = request.request_uri
    except SipParseError:
        return None
    return uri.user_unescaped, uri.host_lower


class _WindowedDetector(Detector):
    """Shared plumbing: the tables a detector holds, their expiry, their stats."""

    @abstractmethod
    def _tables(self) -> tuple[DistinctCounter[str, str] | SlidingWindowCounter[str], _Throttle]:
        """The key counter and the hit throttle of this detector."""

    def advance(self, now: float) -> list[Finding]:
        counter, throttle = self._tables()
        counter.expire(now)
        throttle.table.expire(now)
        return []

    def next_deadline(self) -> float | None:
        counter, throttle = self._tables()
        deadlines = [
            d for d in (counter.next_expiry(), throttle.table.next_expiry()) if d is not None
        ]
        return min(deadlines) if deadlines else None

    def stats(self) -> TableStats:
        counter, throttle = self._tables()
        return TableStats.total((counter, throttle.table))

    def state_size(self) -> int:
        return self.stats().entries

    def evictions(self) -> int:
        return self.stats().evictions


# -- RequestFlood --------------------------------------------------------------------------------


class RequestFloodConfig(DetectorConfig):
    window_s: float = Field(
        2.0,
        gt=0,
        description=(
            "Sliding window, seconds. Default as Kamailio/OpenSIPS pike `sampling_time_unit` = "
            "2 s (kamailio/kamailio:src/modules/pike/README). Unlike pike's IP tree, which may "
            "need up to 3x the density for IPv4 (8-9x for IPv6) depending on neighbouring "
            "addresses, this window fires as soon as the count is reached."
        ),
    )
    requests_per_window: int = Field(
        30,
        ge=1,
        description=(
            "SIP requests (responses are not counted) from one source IP within one window "
            "that make a flood; the hit comes with the request that reaches it. Default as "
            "pike `reqs_density_per_unit` = 30 (Kamailio's default config uses a stricter 16)."
        ),
    )
    max_sources: int = Field(
        100_000,
        ge=1,
        description=(
            "Most source IPs tracked at once; when full, the least recently seen source is "
            "evicted first and counted in evictions (its count restarts if it comes back)."
        ),
    )
    block_ttl_s: int = Field(
        300,
        ge=1,
        description=(
            "Suggested TEMP_BLOCK duration, seconds. Default as the Kamailio default config's "
            "ban table (`$sht(ipban=>$si)`, htable autoexpire = 300 s; etc/kamailio.cfg)."
        ),
    )


@register
class RequestFlood(_WindowedDetector):
    """Pike-style request density: too many SIP requests from one source IP within a window.

    Signal: requests (any method; responses and unparsable datagrams are not counted) per
    source IP in a sliding window of ``window_s``; a hit when the count reaches
    ``requests_per_window``, then at most one per window while the source stays over it.
    Why: a single-source flood (sipp, SIPVicious, a broken UA in a retry loop) exhausts proxy
    and PBX capacity long before bandwidth runs out.
    Defaults' anchor: Kamailio/OpenSIPS pike (``sampling_time_unit`` 2 s,
    ``reqs_density_per_unit`` 30) and the Kamailio default-config 300 s ban. A sliding window
    fires as soon as the count is reached; pike's tree may need up to 3x that (design.md §5).
    Known false positives: a NAT'd PBX or SBC sending OPTIONS keep-alives for many extensions
    (pike blocked a FreePBX sending OPTIONS for 2000 extensions, dOpensource/dsiprouter#696);
    an office behind one IP re-REGISTERing after an outage (irontec/ivozprovider#704). Put such
    peers in ``allow_sources``.
    """

    id: ClassVar[str] = "tdos.request_flood"
    threat: ClassVar[Threat] = Threat.TDOS
    Config: ClassVar[type[DetectorConfig]] = RequestFloodConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, RequestFloodConfig)
        cfg = self.config
        self._cfg = cfg
        self._counts: SlidingWindowCounter[str] = SlidingWindowCounter(
            cfg.max_sources, cfg.window_s, cfg.requests_per_window
        )
        self._throttle = _Throttle(cfg.max_sources, cfg.window_s)

    def _tables(self) -> tuple[SlidingWindowCounter[str], _Throttle]:
        return self._counts, self._throttle

    def observe(self, obs: Observation) -> list[Finding]:
        request = obs.request
        if request is None or self.allowed(obs.src.ip):
            return []
        cfg = self._cfg
        source = obs.src.ip
        count = self._counts.add(source, obs.ts)
        if count < cfg.requests_per_window or not self._throttle.allow(source, obs.ts):
            return []
        return [
            self.hit(
                obs,
                Severity.HIGH,
                80,
                f"request flood from {source}: {count} requests in {cfg.window_s:g} s "
                f"(last {request.method[:32]} to {obs.dst.ip})",
                source,
                target=Target(obs.dst.ip, obs.dst.port),
                indicators={
                    "requests_in_window": str(count),
                    "window_s": f"{cfg.window_s:g}",
                    "method": request.method[:32],
                },
                action=RecommendedAction("TEMP_BLOCK", cfg.block_ttl_s),
            )
        ]


# -- TargetFanIn ---------------------------------------------------------------------------------


class TargetFanInConfig(DetectorConfig):
    window_s: float = Field(
        10.0,
        gt=0,
        description=(
            "Sliding window, seconds. Default 10 s as the Kamailio ratelimit/pipelimit and "
            "OpenSIPS ratelimit `timer_interval` (and OpenSIPS SBT `window_size`) = 10 s, the "
            "interval those modules use for per-target pipes keyed on $rU."
        ),
    )
    sources_per_window: int = Field(
        50,
        ge=1,
        description=(
            "Distinct source IPs sending requests to one target within one window that make a "
            "distributed flood. Our default: a target is normally reached through a handful of "
            "proxies/trunks, and a botnet spreading load to stay under per-source limits (30 "
            "requests / 2 s each, RequestFlood) needs many sources to hurt; 50 is well above a "
            "busy trunk group and well below a botnet. No open engine has a default (Kamailio "
            "pipelimit and OpenSIPS ratelimit keyed on $rU leave the limit to the operator)."
        ),
    )
    max_targets: int = Field(
        100_000,
        ge=1,
        description=(
            "Most targets tracked at once; when full, the least recently seen target is "
            "evicted first and counted in evictions. Each target keeps at most "
            "`sources_per_window` sources (enough to answer 'reached the threshold?')."
        ),
    )
    ignore_methods: tuple[str, ...] = Field(
        ("REGISTER",),
        description=(
            "Request methods not counted (upper-case). REGISTER by default: every phone of a "
            "domain registers to the same Request-URI (sip:domain), so a registrar sees a "
            "large fan-in after an outage (irontec/ivozprovider#704); per-source floods are "
            "still caught by tdos.request_flood."
        ),
    )
    block_ttl_s: int = Field(
        300,
        ge=1,
        description=(
            "Suggested RATE_LIMIT duration for the target, seconds; 300 s as the Kamailio "
            "default config's ban (htable autoexpire)."
        ),
    )


@register
class TargetFanIn(_WindowedDetector):
    """Distributed flood: many distinct sources sending requests to one target within a window.

    Signal: distinct source IPs per target in a sliding window, the target being the
    Request-URI ``user@host`` (``host`` when it has no user, the destination IP when it does not
    parse). Responses and ``ignore_methods`` are not counted.
    Why: a botnet spreads a flood over many sources so each stays under per-source limits
    (pike, tdos.request_flood); only the target sees the sum.
    Defaults' anchor: 50 sources / 10 s - the 10 s interval of Kamailio pipelimit / OpenSIPS
    ratelimit (keyed on ``$rU`` for this purpose, anchors §2.1); the count is our proposal.
    Known false positives: a popular number reached directly by many peers; many NAT'd PBXs
    polling one monitoring URI with OPTIONS (dOpensource/dsiprouter#696 shows OPTIONS storms
    from one PBX); trusted peers go in ``allow_sources``.
    """

    id: ClassVar[str] = "tdos.target_fan_in"
    threat: ClassVar[Threat] = Threat.TDOS
    Config: ClassVar[type[DetectorConfig]] = TargetFanInConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, TargetFanInConfig)
        cfg = self.config
        self._cfg = cfg
        self._ignore = frozenset(m.upper() for m in cfg.ignore_methods)
        self._sources: DistinctCounter[str, str] = DistinctCounter(
            cfg.max_targets, cfg.window_s, cfg.sources_per_window
        )
        self._throttle = _Throttle(cfg.max_targets, cfg.window_s)

    def _tables(self) -> tuple[DistinctCounter[str, str], _Throttle]:
        return self._sources, self._throttle

    def observe(self, obs: Observation) -> list[Finding]:
        request = obs.request
        if request is None or request.method in self._ignore or self.allowed(obs.src.ip):
            return []
        cfg = self._cfg
        parts = _ruri_user_host(request)
        user: str | None = None
        if parts is None:
            key = f"ip:{obs.dst.ip}"
        else:
            user, host = parts
            key = f"{user}@{host}" if user is not None else host
        count = self._sources.add(key, obs.src.ip, obs.ts)
        if count < cfg.sources_per_window or not self._throttle.allow(key, obs.ts):
            return []
        return [
            self.hit(
                obs,
                Severity.HIGH,
                60,
                f"distributed flood on {key[:_MAX_INDICATOR]}: requests from {count} sources "
                f"in {cfg.window_s:g} s",
                key,
                target=Target(obs.dst.ip, obs.dst.port, user),
                indicators={
                    "target": key[:_MAX_INDICATOR],
                    "sources_in_window": str(count),
                    "window_s": f"{cfg.window_s:g}",
                },
                action=RecommendedAction("RATE_LIMIT", cfg.block_ttl_s),
            )
        ]


# -- InviteRatePerTarget -------------------------------------------------------------------------


class InviteRatePerTargetConfig(DetectorConfig):
    window_s: float = Field(
        10.0,
        gt=0,
        description=(
            "Sliding window, seconds. Default 10 s as Kamailio pipelimit `timer_interval` = 10 "
            "(a pipe keyed on $rU is the open-source way to cap calls to one callee)."
        ),
    )
    invites_per_window: int = Field(
        20,
        ge=1,
        description=(
            "New INVITEs (no To tag; re-INVITEs are not counted) to one callee within one "
            "window that make a call flood. Our default, 2 calls/s sustained for 10 s: far "
            "above what one person or a small hunt group answers. Coarser anchor: ET Open "
            "INVITE flood 100 in 60 s by_src (sids 2003192/2009698)."
        ),
    )
    max_callees: int = Field(
        100_000,
        ge=1,
        description=(
            "Most callees tracked at once; when full, the least recently called is evicted "
            "first and counted in evictions."
        ),
    )
    ignore_users: tuple[str, ...] = Field(
        (),
        description=(
            "Request-URI users never counted (exact match): contact-centre, IVR or conference "
            "numbers that legitimately take many calls per second. Empty by default."
        ),
    )
    block_ttl_s: int = Field(
        300,
        ge=1,
        description=(
            "Suggested RATE_LIMIT duration for calls to the callee, seconds; 300 s as the "
            "Kamailio default config's ban (htable autoexpire)."
        ),
    )


@register
class InviteRatePerTarget(_WindowedDetector):
    """INVITE flood on one callee: too many new calls to one Request-URI user within a window.

    Signal: initial INVITEs (no To tag) per Request-URI user (%-unescaped, any host, as
    Kamailio ``$rU``) in a sliding window, from any sources; INVITEs without a user part are not
    counted (tdos.target_fan_in and tdos.request_flood still see them).
    Why: a call flood (robocalls, a T-DoS campaign, a wangiri burst back) makes one number
    unreachable even when each source stays slow.
    Defaults' anchor: 20 INVITEs / 10 s - Kamailio pipelimit keyed on ``$rU`` with its 10 s
    ``timer_interval``; ET Open INVITE flood 100 / 60 s (by source) is the coarse reference.
    Known false positives: contact-centre / IVR / conference numbers (``ignore_users``); a
    NAT'd PBX or SBC relaying many callers' calls to one number (dOpensource/dsiprouter#696
    shows how such peers trip per-IP limits; ``allow_sources``).
    """

    id: ClassVar[str] = "tdos.invite_rate_per_target"
    threat: ClassVar[Threat] = Threat.TDOS
    Config: ClassVar[type[DetectorConfig]] = InviteRatePerTargetConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, InviteRatePerTargetConfig)
        cfg = self.config
        self._cfg = cfg
        self._ignore = frozenset(cfg.ignore_users)
        self._invites: SlidingWindowCounter[str] = SlidingWindowCounter(
            cfg.max_callees, cfg.window_s, cfg.invites_per_window
        )
        self._throttle = _Throttle(cfg.max_callees, cfg.window_s)

    def _tables(self) -> tuple[SlidingWindowCounter[str], _Throttle]:
        return self._invites, self._throttle

    def observe(self, obs: Observation) -> list[Finding]:
        request = obs.request
        if request is None or request.method != "INVITE" or self.allowed(obs.src.ip):
            return []
        try:
            to = request.to
        except SipParseError:
            to = None
        if to is not None and to.tag:
            return []  # re-INVITE inside a dialog, not a new call
        parts = _ruri_user_host(request)
        if parts is None or not parts[0] or parts[0] in self._ignore:
            return []
        cfg = self._cfg
        callee = parts[0]
        count = self._invites.add(callee, obs.ts)
        if count < cfg.invites_per_window or not self._throttle.allow(callee, obs.ts):
            return []
        return [
            self.hit(
                obs,
                Severity.HIGH,
                70,
                f"INVITE flood on {callee[:_MAX_INDICATOR]}: {count} new calls in "
                f"{cfg.window_s:g} s (last from {obs.src.ip})",
                callee,
                target=Target(obs.dst.ip, obs.dst.port, callee),
                indicators={
                    "callee": callee[:_MAX_INDICATOR],
                    "invites_in_window": str(count),
                    "window_s": f"{cfg.window_s:g}",
                },
                action=RecommendedAction("RATE_LIMIT", cfg.block_ttl_s),
            )
        ]


# -- RegistrationStorm ---------------------------------------------------------------------------


class RegistrationStormConfig(DetectorConfig):
    window_s: float = Field(
        60.0,
        gt=0,
        description=(
            "Sliding window, seconds. 60 s as the ET Open REGISTER flood rules (sids "
            "2003193/2009699: 100 in 60 s)."
        ),
    )
    registers_per_window: int = Field(
        100,
        ge=1,
        description=(
            "REGISTER requests (retransmissions included: they are load too) to one registrar "
            "(destination IP) within one window that make a storm or a burst. 100 as ET Open's "
            "REGISTER flood (100 / 60 s, there per source, here per registrar). Size it to the "
            "registrar: Oracle SBC's `max-register-refresh` ≈ 150 % of endpoints / refresh "
            "interval - 100 / min is ~1.5x the refresh load of 4000 phones on 3600 s expiry."
        ),
    )
    min_known_share: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description=(
            "Share of the window's REGISTERs whose AOR (To user @ Request-URI host) the "
            "registrar accepted (2xx) before, at or above which the spike is a re-registration "
            "burst of known users (low, MONITOR), below which it is a storm (high, "
            "RATE_LIMIT). No published anchor: Kamailio/OpenSIPS ratelimit RED and Oracle "
            "SBC `reg-overload-protect` shed such bursts instead of blocking them (anchors "
            "§2.1); after an outage nearly every REGISTER is a known AOR "
            "(irontec/ivozprovider#704), while guessing and floods use AORs never accepted."
        ),
    )
    min_sources: int = Field(
        10,
        ge=1,
        description=(
            "Distinct source IPs that must have sent the window's REGISTERs before the spike "
            "is judged at all: a storm or a burst is many clients. One source (or a few) "
            "sending 100 REGISTERs a minute is a flood or a guessing run that "
            "tdos.request_flood and the credential detectors name per source, and that a "
            "per-registrar finding would misdescribe. No published anchor (ET Open counts per "
            "source, anchors §1 'registration-storm vs attack' has none): 10 is the smallest "
            "count that no single office NAT pool or lone scanner reaches, while a botnet or "
            "a population recovering from an outage does."
        ),
    )
    known_aor_ttl_s: float = Field(
        604_800.0,
        gt=0,
        description=(
            "How long an AOR stays known after its last accepted REGISTER, seconds. 7 days (as "
            "APIBAN keeps an address active for 7 days): longer than any outage a burst "
            "follows, so a weekend-long outage is still recognised."
        ),
    )
    max_known_aors: int = Field(
        200_000,
        ge=1,
        description=(
            "Most known AORs remembered; the least recently accepted is forgotten first and "
            "counted in evictions (it then counts as unknown until accepted again)."
        ),
    )
    max_registrars: int = Field(
        256,
        ge=1,
        description=(
            "Most registrars (destination IPs receiving REGISTERs) counted at once; the least "
            "recently seen is evicted first and counted. Each keeps at most 10x "
            "`registers_per_window` events per counter, so the known share stays exact up to "
            "ten times the threshold."
        ),
    )
    block_ttl_s: int = Field(
        300,
        ge=1,
        description=(
            "Suggested RATE_LIMIT duration for REGISTERs to the registrar, seconds; 300 s as "
            "the Kamailio default config's ban (htable autoexpire)."
        ),
    )
    warmup_s: float = Field(
        3600.0,
        ge=0,
        description=(
            "For this long after a registrar's first REGISTER is seen, a storm is reported low "
            "(MONITOR): no AOR can be known yet, so a storm and a re-registration burst look "
            "alike. 3600 s, the RFC 3261 §10.2.1.1 default registration expiry: after one "
            "interval every registered UA has refreshed and is known. 0 turns it off."
        ),
    )


@register
class RegistrationStorm(Detector):
    """Registration storm on one registrar, told apart from a re-registration burst of known
    users.

    Signal: REGISTER requests per registrar (destination IP) in a sliding window; when they
    reach ``registers_per_window`` and came from at least ``min_sources`` source IPs (fewer is
    a per-source flood or brute force, left to tdos.request_flood and credential.*), the
    detector looks at how many came from AORs (To user @
    Request-URI host) the registrar accepted with a 2xx before (learned from the tracker's
    REGISTER transactions, remembered ``known_aor_ttl_s``). At least ``min_known_share`` known:
    a re-registration burst (LOW, MONITOR); fewer: a storm (HIGH, RATE_LIMIT). At most one hit
    per registrar and kind per window while it stays over.
    Why: a storm of REGISTERs for AORs the registrar never accepted (enumeration, guessing,
    a REGISTER flood, a botnet) exhausts registrar CPU on digest checks and database lookups;
    a burst of known phones re-registering after an outage or a NAT reboot must be shed gently
    (RED, ``reg-overload-protect``), never banned (irontec/ivozprovider#704).
    Defaults' anchor: 100 REGISTERs / 60 s as ET Open's REGISTER flood (there per source);
    known share 80 % our proposal (no engine publishes one; anchors §1 "registration-storm vs
    attack": only RED's re-sync avoidance); 10 distinct sources our proposal; AOR memory 7
    days.
    For ``warmup_s`` after a registrar is first seen no AOR can be known, so a storm is reported
    low. Known false positives: a burst after more than ``known_aor_ttl_s`` of outage reads as
    a storm; mass provisioning of new phones. Known false negatives: a storm in the first
    ``warmup_s`` is only low (per-source floods still trip ``tdos.request_flood``).
    Known false negatives: a flood re-using one known AOR counts as known (the credential
    detectors and tdos.request_flood see it).
    """

    id: ClassVar[str] = "tdos.registration_storm"
    threat: ClassVar[Threat] = Threat.TDOS
    Config: ClassVar[type[DetectorConfig]] = RegistrationStormConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, RegistrationStormConfig)
        cfg = self.config
        self._cfg = cfg
        cap = 10 * cfg.registers_per_window
        self._known_aors: TtlMap[str, float] = TtlMap(cfg.max_known_aors, cfg.known_aor_ttl_s)
        self._known: SlidingWindowCounter[str] = SlidingWindowCounter(
            cfg.max_registrars, cfg.window_s, cap
        )
        self._unknown: SlidingWindowCounter[str] = SlidingWindowCounter(
            cfg.max_registrars, cfg.window_s, cap
        )
        # Capped at the floor: enough to answer "many clients?".
        self._sources: DistinctCounter[str, str] = DistinctCounter(
            cfg.max_registrars, cfg.window_s, cfg.min_sources
        )
        self._throttle = _Throttle(2 * cfg.max_registrars, cfg.window_s)
        # registrar -> when its first REGISTER was seen (for the warm-up); kept as long as AORs.
        self._first_seen: TtlMap[str, float] = TtlMap(cfg.max_registrars, cfg.known_aor_ttl_s)

    @staticmethod
    def _aor(user: str | None, host: str | None) -> str | None:
        # Cut each part as the tracker cuts Transaction fields, so both sides build one key.
        if not user or not host:
            return None
        return f"{user[:_MAX_KEY_CHARS]}@{host[:_MAX_KEY_CHARS].lower()}"[:_MAX_KEY_CHARS]

    def is_known(self, aor: str, now: float) -> bool:
        """True when ``aor`` had a REGISTER accepted within ``known_aor_ttl_s``."""
        return self._known_aors.get(aor, now) is not None

    def on_transaction(self, tx: Transaction) -> list[Finding]:
        if tx.method == "REGISTER" and tx.status is not None and 200 <= tx.status < 300:
            aor = self._aor(tx.to_user, tx.request_uri_host)
            if aor is not None:
                self._known_aors.set(aor, tx.response_ts, tx.response_ts)
        return []

    def observe(self, obs: Observation) -> list[Finding]:
        request = obs.request
        if request is None or request.method != "REGISTER" or self.allowed(obs.src.ip):
            return []
        now = obs.ts
        try:
            to = request.to
            user = to.uri.user if to is not None else None
            host: str | None = request.request_uri.host_lower
        except (SipParseError, ValueError):
            user, host = None, None
        aor = self._aor(user, host)
        registrar = obs.dst.ip
        first_seen = self._first_seen.get(registrar, now)
        if first_seen is None:
            first_seen = now
        self._first_seen.set(registrar, first_seen, now)
        if aor is not None and self.is_known(aor, now):
            known = self._known.add(registrar, now)
            unknown = self._unknown.count(registrar, now)
        else:
            known = self._known.count(registrar, now)
            unknown = self._unknown.add(registrar, now)
        sources = self._sources.add(registrar, obs.src.ip, now)
        cfg = self._cfg
        total = known + unknown
        if total < cfg.registers_per_window or sources < cfg.min_sources:
            return []
        share = known / total
        storm = share < cfg.min_known_share
        kind = "storm" if storm else "burst"
        if not self._throttle.allow(f"{registrar}|{kind}", now):
            return []
        indicators = {
            "registers_in_window": str(total),
            "known_aor_registers": str(known),
            "unknown_aor_registers": str(unknown),
            "known_share": f"{share:.2f}",
            "distinct_sources_at_least": str(sources),
            "window_s": f"{cfg.window_s:g}",
        }
        target = Target(obs.dst.ip, obs.dst.port)
        if storm and now - first_seen < cfg.warmup_s:
            return [
                self.hit(
                    obs,
                    Severity.LOW,
                    40,
                    f"registration storm or re-registration burst on {registrar}: {total} "
                    f"REGISTERs in {cfg.window_s:g} s, {unknown} for AORs not yet seen accepted "
                    f"(registrar first seen {now - first_seen:.0f} s ago: too soon to tell)",
                    f"{registrar}|storm",
                    target=target,
                    indicators=indicators,
                    action=RecommendedAction("MONITOR"),
                )
            ]
        if storm:
            return [
                self.hit(
                    obs,
                    Severity.HIGH,
                    70,
                    f"registration storm on {registrar}: {total} REGISTERs in "
                    f"{cfg.window_s:g} s, {unknown} for AORs never accepted (last from "
                    f"{obs.src.ip})",
                    f"{registrar}|storm",
                    target=target,
                    indicators=indicators,
                    action=RecommendedAction("RATE_LIMIT", cfg.block_ttl_s),
                )
            ]
        return [
            self.hit(
                obs,
                Severity.LOW,
                50,
                f"re-registration burst on {registrar}: {total} REGISTERs in "
                f"{cfg.window_s:g} s, {share:.0%} from known AORs (outage recovery?)",
                f"{registrar}|burst",
                target=target,
                indicators=indicators,
                action=RecommendedAction("MONITOR"),
            )
        ]

    def advance(self, now: float) -> list[Finding]:
        self._known.expire(now)
        self._unknown.expire(now)
        self._sources.expire(now)
        self._throttle.table.expire(now)
        self._known_aors.expire(now)
        self._first_seen.expire(now)
        return []

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for d in (
                self._known.next_expiry(),
                self._unknown.next_expiry(),
                self._sources.next_expiry(),
                self._throttle.table.next_expiry(),
                self._known_aors.next_expiry(),
                self._first_seen.next_expiry(),
            )
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    def stats(self) -> TableStats:
        return TableStats.total(
            (
                self._known,
                self._unknown,
                self._sources,
                self._throttle.table,
                self._known_aors,
                self._first_seen,
            )
        )

    def state_size(self) -> int:
        return self.stats().entries

    def evictions(self) -> int:
        return self.stats().evictions
