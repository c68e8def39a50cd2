"""toll_fraud: IRSF, premium-rate destinations, PBX hacking, velocity and concurrency abuse
(conventions.md §1; defaults from shared/reference/detection-anchors.md §2.3).

Theory of operation
-------------------
Toll fraud is judged on *calls*, not packets: every detector here works on the tracker's
:class:`CallEvent`s (an INVITE retransmission or a re-INVITE starts no call), mostly on
``STARTED`` - the attempt is the signal, whether or not the network let it through.

The heart is *dial-string normalisation*. A hacked PBX or a fraudster probing an open trunk does
not know the victim's dial plan, so one destination arrives as ``01148185422016`` (NANP
international prefix), ``901148…`` (outside line 9 first), ``0048…`` (ITU prefix 00),
``+48…`` or ``1010222011972…`` (a US dial-around carrier access code first).
:func:`normalize_dialled` peels those prefixes off - outside line, then carrier access code,
then international prefix, each from config - and returns an E.164 candidate and the prefix
string that was used. National numbers (no international prefix) give ``None``: this family
judges international destinations.

From there:

* :class:`DestinationRisk` classifies the E.164 number (:func:`classify_destination`): an
  operator range of high-risk prefixes (``high_risk_prefixes``, or the config file's
  ``high_risk_prefixes_file``), the international networks (+870/+881/+882/+883),
  libphonenumber number types (premium rate, shared cost, ...) and optional country tiers.
* :class:`PrefixWalking` fires when one source tries the *same* number with two or more
  different dialling prefixes - the fingerprint of a tool looking for a way out.
* :class:`CallVelocity` (calls per minute, calls per day), :class:`CallConcurrency`,
  :class:`SequentialDialing` and :class:`OffHoursBurst` are OpenSIPS fraud_detection's per-user
  statistics, counted per account (digest username, else From user, else source IP).

Emission: a detector emits a hit when a key crosses its threshold, then at most one hit per
``_REPEAT_S`` while it stays over. Detectors *count* per account but *report* per source IP: a
tool that rotates the From user (initconf--SIP-212.32.250.134 cycles 101, 202 ... 4004 from one
address) is one attacker, so every account's hits share the source's key and the engine (episode
gap 300 s) merges them into one finding per source and episode, which lists the accounts. All
state is in bounded tables (:mod:`sipwarden.detect.tables`); keys are the tracker's already-cut
(≤128 chars) strings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

import phonenumbers
from pydantic import Field, field_validator

from sipwarden.detect.base import Detector, DetectorConfig
from sipwarden.detect.finding import Evidence, Finding, RecommendedAction, Target
from sipwarden.detect.observation import Observation
from sipwarden.detect.registry import register
from sipwarden.detect.tables import DistinctCounter, SlidingWindowCounter, TableStats, TtlMap
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.detect.tracker import CallEvent, CallPhase

__all__ = [
    "CallConcurrency",
    "CallConcurrencyConfig",
    "CallVelocity",
    "CallVelocityConfig",
    "DestinationRisk",
    "DestinationRiskConfig",
    "DialPlanConfig",
    "OffHoursBurst",
    "OffHoursBurstConfig",
    "PrefixWalking",
    "PrefixWalkingConfig",
    "RiskAssessment",
    "SequentialDialing",
    "SequentialDialingConfig",
    "classify_destination",
    "normalize_dialled",
]

#: A key over its threshold gets at most one hit this often: below the engine's 300 s episode
#: gap, so one episode stays one finding, yet a long attack does not emit a hit per call.
_REPEAT_S = 60.0
_MAX_LABEL = 64
#: Attacker-chosen strings (accounts) copied into summaries and indicators are cut to this.
_MAX_TEXT_CHARS = 64
_E164_PREFIX = re.compile(r"^\+[0-9]{1,15}$")
#: Accounts named in one finding's ``accounts`` indicator (more are shown as "...").
_MAX_LISTED_ACCOUNTS = 10
#: How long a source's over-the-limit accounts are remembered for that list: longer than the
#: engine's default 300 s episode gap, so an episode's list does not restart mid-episode.
_LISTED_ACCOUNTS_TTL_S = 3600.0
# RFC 3966 visual separators, allowed inside a telephone-subscriber.
_VISUAL_SEPARATORS = str.maketrans("", "", "-.() ")
_NUMBER_TYPES = {name for name in dir(phonenumbers.PhoneNumberType) if name.isupper()}
_TYPE_NAMES: dict[int, str] = {
    getattr(phonenumbers.PhoneNumberType, name): name for name in _NUMBER_TYPES
}
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


# -- dial-string normalisation -------------------------------------------------------------------


class DialPlanConfig(DetectorConfig):
    """How dialled strings are read (shared by the detectors that normalise numbers)."""

    international_prefixes: tuple[str, ...] = Field(
        ("00", "011"),
        description=(
            "International call prefixes, digits only. Default: 00 (ITU-T E.164 Annex A, the "
            "recommended prefix used by most countries) and 011 (NANP). Add e.g. 010 (Japan) "
            "or 0011 (Australia) for your subscribers' dial plan."
        ),
    )
    outside_line_prefixes: tuple[str, ...] = Field(
        ("9",),
        description=(
            "PBX trunk-access ('outside line') digits that may precede an international "
            "prefix. Default 9, the NANP PBX custom seen in public attack captures "
            "(initconf--SIP-212.32.250.134: 901148...). Many European PBXs use 0; add it if "
            "yours do (0 is not a default because 0 also starts national numbers)."
        ),
    )
    carrier_access_prefix: str = Field(
        "101",
        pattern=r"^[0-9]*$",
        description=(
            "Carrier access code that may precede an international prefix (US 'dial-around'); "
            "empty disables it. Default 101 as the NANP Carrier Access Code 101XXXX, seen in "
            "attack captures as 1010222011972..."
        ),
    )
    carrier_code_digits: int = Field(
        4,
        ge=0,
        le=8,
        description="Digits of carrier identification code after carrier_access_prefix (NANP "
        "CIC: 4, so 101 + XXXX).",
    )

    @field_validator("international_prefixes", "outside_line_prefixes")
    @classmethod
    def _digits(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not item.isdigit():
                raise ValueError(f"{item!r} is not a string of digits")
        return value


def normalize_dialled(user: str | None, config: DialPlanConfig) -> tuple[str | None, str]:
    """The E.164 candidate a dialled Request-URI user reaches, and the prefix used to reach it.

    ``"01148185422016"`` → ``("+48185422016", "011")``; ``"901148…"`` → ``(…, "9011")``;
    ``"1010222011972…"`` → ``("+972…", "1010222011")``; ``"+48…"`` → ``(…, "+")``. A string
    that is not an international number (national, an extension, a name) gives ``(None, "")``.
    Only syntax is checked (7-15 digits after the prefix); :func:`classify_destination` judges
    the number.
    """
    if not user:
        return None, ""
    text = user.split(";", 1)[0].replace("%2B", "+").replace("%2b", "+")
    text = text.translate(_VISUAL_SEPARATORS)
    if text.startswith("+"):
        number = _e164(text[1:])
        return number, "+" if number else ""
    if not text.isdigit():
        return None, ""
    international = sorted(config.international_prefixes, key=len, reverse=True)
    for outside in ("", *config.outside_line_prefixes):
        if not text.startswith(outside):
            continue
        rest = text[len(outside) :]
        for carrier in _carrier_codes(rest, config):
            after = rest[len(carrier) :]
            for prefix in international:
                if after.startswith(prefix):
                    number = _e164(after[len(prefix) :])
                    if number is not None:
                        return number, outside + carrier + prefix
    return None, ""


def _carrier_codes(rest: str, config: DialPlanConfig) -> tuple[str, ...]:
    access = config.carrier_access_prefix
    length = len(access) + config.carrier_code_digits
    if access and rest.startswith(access) and len(rest) > length:
        return ("", rest[:length])
    return ("",)


def _e164(digits: str) -> str | None:
    if digits.isdigit() and 7 <= len(digits) <= 15 and digits[0] != "0":
        return "+" + digits
    return None


# -- destination classification ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    """Why a destination is risky: the highest severity among its reasons, and the reasons."""

    e164: str
    region: str
    number_type: str
    severity: Severity
    reasons: tuple[str, ...]


class DestinationRiskConfig(DialPlanConfig):
    high_risk_prefixes: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Operator list of high-risk E.164 prefixes -> label (e.g. ranges from a carrier's "
            "IRSF advisory); a call to one is high severity. Empty by default: no public, "
            "licensed list of IRSF number ranges exists (GSMA FF.21 lists are closed). In the "
            "config file, high_risk_prefixes_file names a file of one prefix per line (1-15 "
            "digits, the leading '+' optional), optional whitespace and label (<=64 chars), "
            "'#' comments; prefixes are stored with '+', the first of duplicates wins."
        ),
    )
    international_network_codes: tuple[str, ...] = Field(
        ("870", "881", "882", "883"),
        description=(
            "Country codes of non-geographic satellite and international networks (ITU-T "
            "E.164 assignments: 870 Inmarsat, 881 Global Mobile Satellite System, 882/883 "
            "International Networks; libphonenumber region 001), long-standing IRSF "
            "terminations. A call to one is medium severity: ships and remote sites do call "
            "satellite phones."
        ),
    )
    premium_number_types: tuple[str, ...] = Field(
        ("PREMIUM_RATE",),
        description=(
            "libphonenumber number types (phonenumbers.PhoneNumberType names) rated medium: "
            "revenue-share numbers, the classic IRSF terminations (corpus ranges/PROVENANCE)."
        ),
    )
    elevated_number_types: tuple[str, ...] = Field(
        ("SHARED_COST", "UAN", "PERSONAL_NUMBER"),
        description=(
            "libphonenumber number types rated low: revenue-sharing or re-routable numbers "
            "that are also used legitimately (shared cost, universal access, personal "
            "numbers)."
        ),
    )
    country_risk_tiers: dict[str, Literal["high", "medium", "low"]] = Field(
        default_factory=dict,
        description=(
            "Region (ISO 3166 alpha-2 as libphonenumber reports it, '001' for non-geographic) "
            "-> tier; high/medium/low give that severity to any call there. Empty by default: "
            "there is no authoritative public tier list (CFCA's surveys name top IRSF "
            "destinations but change yearly and are not licensed for redistribution); fill it "
            "from your own CDR history or carrier advisories."
        ),
    )
    max_callers: int = Field(
        100_000, ge=1, description="Callers (account or source) whose hits are rate-limited."
    )

    @field_validator("premium_number_types", "elevated_number_types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if item not in _NUMBER_TYPES:
                raise ValueError(f"{item!r} is not a phonenumbers.PhoneNumberType name")
        return value

    @field_validator("high_risk_prefixes")
    @classmethod
    def _prefixes(cls, value: dict[str, str]) -> dict[str, str]:
        # Range files and advisories often leave out the '+': "37167" means "+37167". The
        # config loader hands file lines over as they are written, so normalise here.
        ranges: dict[str, str] = {}
        for written, written_label in value.items():
            prefix = written.strip()
            prefix = prefix if prefix.startswith("+") else "+" + prefix
            if not _E164_PREFIX.match(prefix):
                raise ValueError(
                    f"{written[:40]!r} is not an E.164 prefix (1-15 digits, '+' optional)"
                )
            label = written_label.strip()
            if len(label) > _MAX_LABEL:
                raise ValueError(f"label of {prefix} is longer than {_MAX_LABEL} characters")
            ranges.setdefault(prefix, label)
        return ranges


_TIER_SEVERITY = {"high": Severity.HIGH, "medium": Severity.MEDIUM, "low": Severity.LOW}
_SEVERITY_ORDER = (Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)


def classify_destination(e164: str, config: DestinationRiskConfig) -> RiskAssessment | None:
    """The risk of calling ``e164`` under ``config``, or None when nothing makes it risky."""
    reasons: list[tuple[Severity, str]] = []
    for prefix, label in config.high_risk_prefixes.items():
        if e164.startswith(prefix):
            reasons.append(
                (Severity.HIGH, f"operator range {prefix}" + (f" ({label})" if label else ""))
            )
            break
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        number = None
    region, type_name = "", "UNKNOWN"
    if number is not None:
        region = phonenumbers.region_code_for_number(number) or ""
        type_code = phonenumbers.number_type(number)
        type_name = _TYPE_NAMES.get(type_code, "UNKNOWN")
        if str(number.country_code) in config.international_network_codes:
            reasons.append((Severity.MEDIUM, f"international network +{number.country_code}"))
        if type_name in config.premium_number_types:
            reasons.append((Severity.MEDIUM, f"number type {type_name}"))
        elif type_name in config.elevated_number_types:
            reasons.append((Severity.LOW, f"number type {type_name}"))
        tier = config.country_risk_tiers.get(region)
        if tier is not None:
            reasons.append((_TIER_SEVERITY[tier], f"country tier {tier} ({region})"))
    if not reasons:
        return None
    severity = max((s for s, _ in reasons), key=_SEVERITY_ORDER.index)
    return RiskAssessment(e164, region, type_name, severity, tuple(r for _, r in reasons))


# -- shared plumbing -----------------------------------------------------------------------------


class _Expiring(Protocol):
    def expire(self, now: float) -> object: ...

    def next_expiry(self) -> float | None: ...

    def stats(self) -> TableStats: ...


class _CallDetector(Detector):
    """Tables, expiry, stats, the hit throttle and the per-source account list shared by this
    family's detectors."""

    threat: ClassVar[Threat] = Threat.TOLL_FRAUD

    def __init__(self, config: DetectorConfig | None, max_keys: int) -> None:
        super().__init__(config)
        self._throttle: TtlMap[str, float] = TtlMap(max_keys, _REPEAT_S)
        # source IP -> its accounts that went over a limit lately (the finding's list).
        self._accounts_by_source: TtlMap[str, tuple[str, ...]] = TtlMap(
            max_keys, _LISTED_ACCOUNTS_TTL_S
        )

    def _tables(self) -> Sequence[_Expiring]:
        return (self._throttle, self._accounts_by_source)

    def _allow_hit(self, key: str, now: float) -> bool:
        if self._throttle.get(key, now) is not None:
            return False
        self._throttle.set(key, now, now)
        return True

    def observe(self, obs: Observation) -> list[Finding]:
        return []  # calls come from the tracker (on_call)

    def advance(self, now: float) -> list[Finding]:
        for table in self._tables():
            table.expire(now)
        return []

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (t.next_expiry() for t in self._tables()) if d is not None]
        return min(deadlines) if deadlines else None

    def stats(self) -> TableStats:
        result = TableStats()
        for table in self._tables():
            result = result + table.stats()
        return result

    def state_size(self) -> int:
        return self.stats().entries

    def evictions(self) -> int:
        return self.stats().evictions

    def _call_hit(
        self,
        event: CallEvent,
        severity: Severity,
        confidence: int,
        summary: str,
        key: str,
        indicators: dict[str, str],
        action: RecommendedAction | None,
    ) -> Finding:
        call = event.call
        return Finding(
            self.id,
            self.threat,
            severity,
            confidence,
            summary,
            key,
            event.ts,
            event.ts,
            source=call.src,
            target=Target(call.dst.ip, call.dst.port, call.callee),
            indicators=indicators,
            evidence=Evidence().add(event.frame or call.first_frame or None, call.call_id),
            recommended_action=action,
        )

    def _account_hit(
        self,
        event: CallEvent,
        account: str,
        severity: Severity,
        confidence: int,
        summary: str,
        indicators: dict[str, str],
        action: RecommendedAction | None,
        key: str | None = None,
    ) -> Finding:
        """A hit about ``account``'s calls, keyed by its source (not the account, which an
        attacker rotates) unless ``key`` says otherwise, that names the other accounts of the
        same source that went over a limit lately."""
        source = event.call.src.ip
        listed = self._accounts_by_source.get(source, event.ts) or ()
        # An unauthenticated account is "user@source" (tracker.Call.account); the finding is
        # about that source already, so the list names the users.
        account = account.removesuffix(f"@{source}")[:_MAX_TEXT_CHARS]
        if account not in listed and len(listed) <= _MAX_LISTED_ACCOUNTS:
            listed = (*listed, account)  # one more than shown, to know there are more
        self._accounts_by_source.set(source, listed, event.ts)
        accounts = ", ".join(listed[:_MAX_LISTED_ACCOUNTS])
        if len(listed) > _MAX_LISTED_ACCOUNTS:
            accounts += ", ..."
        if len(listed) > 1:
            summary += f"; flagged accounts from {source}: {accounts}"
        indicators = {**indicators, "account": account, "accounts": accounts}
        return self._call_hit(
            event, severity, confidence, summary, key or source, indicators, action
        )


def _caller(event: CallEvent) -> str:
    """Whose calls these are: the account (digest user, else From user), else the source IP."""
    call = event.call
    return call.account or call.src.ip


# -- DestinationRisk -----------------------------------------------------------------------------


@register
class DestinationRisk(_CallDetector):
    """A call attempt to a risky international destination.

    Signal: the dialled Request-URI user, normalised to E.164 (:func:`normalize_dialled`), is in
    an operator high-risk range (high), an international/satellite network or a premium-rate
    number (medium), a shared-cost/UAN/personal number (low), or a configured country tier.
    Why: IRSF terminates on revenue-share numbers in exactly these ranges; a PBX or account
    that starts calling them is the first sign of a hack.
    Defaults' anchor: libphonenumber number types (Kamailio phonenum exposes the same data
    without scoring it); ITU-T E.164 assignments for +870/+881/+882/+883; no public licensed
    IRSF range list or country-tier list exists, so both start empty (see their fields).
    Known false positives: legitimate calls to satellite phones or premium services (hence
    medium/low unless the operator listed the range).
    """

    id: ClassVar[str] = "toll_fraud.destination_risk"
    Config: ClassVar[type[DetectorConfig]] = DestinationRiskConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        cfg = config if config is not None else DestinationRiskConfig()
        assert isinstance(cfg, DestinationRiskConfig)
        super().__init__(cfg, cfg.max_callers)
        self._cfg = cfg

    def on_call(self, event: CallEvent) -> list[Finding]:
        call = event.call
        if event.phase is not CallPhase.STARTED or self.allowed(call.src.ip):
            return []
        e164, prefix = normalize_dialled(call.callee, self._cfg)
        if e164 is None:
            return []
        risk = classify_destination(e164, self._cfg)
        if risk is None:
            return []
        caller = _caller(event)
        if not self._allow_hit(f"{caller}>{e164}", event.ts):
            return []
        high = risk.severity is Severity.HIGH
        return [
            self._account_hit(
                event,
                caller,
                risk.severity,
                85 if high else 60,
                f"call to risky destination {e164} ({'; '.join(risk.reasons)}) by "
                f"{caller[:_MAX_TEXT_CHARS]} from {call.src.ip}",
                {
                    "e164": e164,
                    "dialled": (call.callee or "")[:64],
                    "dial_prefix": prefix,
                    "region": risk.region,
                    "number_type": risk.number_type,
                    "reasons": "; ".join(risk.reasons)[:200],
                },
                RecommendedAction("RESTRICT_SERVICE", 3600) if high else None,
                key=f"{call.src.ip}>{e164}",
            )
        ]


# -- PrefixWalking -------------------------------------------------------------------------------


class PrefixWalkingConfig(DialPlanConfig):
    window_s: float = Field(
        600.0,
        gt=0,
        description=(
            "Sliding window, seconds. 600 s as VoIPmonitor's sequential-call `interval` "
            "example (detection-anchors §2.3); attack captures walk a number's prefixes within "
            "seconds (initconf--SIP-3700: 5 prefixes in 5 s)."
        ),
    )
    min_prefixes: int = Field(
        2,
        ge=2,
        description=(
            "Distinct dialling prefixes for one number from one source that make a walk. 2: "
            "a caller who knows the dial plan uses one. The '+' form is not counted as a "
            "prefix (phones redial from history in E.164), so +48... then 0048... is not a walk."
        ),
    )
    max_keys: int = Field(
        100_000, ge=1, description="(source IP, number) pairs tracked; least recent evicted."
    )
    block_ttl_s: int = Field(
        3600,
        ge=1,
        description="Suggested TEMP_BLOCK of the source, seconds (1 h, the FS.38 example "
        "action in conventions.md §4).",
    )


@register
class PrefixWalking(_CallDetector):
    """One source dials the same international number with different dialling prefixes.

    Signal: per (source IP, E.164 number), the distinct prefixes used (``00``, ``011``,
    ``9011``, ``1010222011`` ...) within ``window_s``; a hit at ``min_prefixes``.
    Why: toll-fraud tools do not know the victim PBX's dial plan, so they try one destination
    with every known way out (public FreeSWITCH logs, pastebin.com/azRShfSg; corpus captures
    initconf--SIP-212.32.250.134 and --SIP-3700). No open engine detects it (anchors §4.7).
    Defaults' anchor: window as VoIPmonitor's sequential `interval` 600 s; 2 prefixes (ours).
    Known false positives: a user retrying a failed call with another prefix by hand (rare,
    and never with three or more); behind a B2BUA every user shares its IP, so two users
    dialling one number in two valid formats look like one source - allow-list it or key the
    capture upstream.
    """

    id: ClassVar[str] = "toll_fraud.prefix_walking"
    Config: ClassVar[type[DetectorConfig]] = PrefixWalkingConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        cfg = config if config is not None else PrefixWalkingConfig()
        assert isinstance(cfg, PrefixWalkingConfig)
        super().__init__(cfg, cfg.max_keys)
        self._cfg = cfg
        # Members are the prefixes; more than a few per number is already a walk.
        self._prefixes: DistinctCounter[str, str] = DistinctCounter(
            cfg.max_keys, cfg.window_s, max(cfg.min_prefixes, 16)
        )
        # key -> distinct prefixes at its last hit.
        self._reported: TtlMap[str, int] = TtlMap(cfg.max_keys, cfg.window_s)

    def _tables(self) -> Sequence[_Expiring]:
        return (self._throttle, self._prefixes, self._reported)

    def on_call(self, event: CallEvent) -> list[Finding]:
        call = event.call
        if event.phase is not CallPhase.STARTED or self.allowed(call.src.ip):
            return []
        e164, prefix = normalize_dialled(call.callee, self._cfg)
        if e164 is None or prefix == "+":
            return []
        key = f"{call.src.ip}>{e164}"
        count = self._prefixes.add(key, prefix, event.ts)
        if count < self._cfg.min_prefixes:
            return []
        # Each new prefix is a hit (the finding's summary shows the latest count); repeats of
        # known prefixes are rate-limited like every detector here.
        reported = self._reported.get(key, event.ts)
        if reported is not None and count <= reported:
            if not self._allow_hit(key, event.ts):
                return []
        else:
            self._throttle.set(key, event.ts, event.ts)
        self._reported.set(key, count, event.ts)
        return [
            self._call_hit(
                event,
                Severity.HIGH,
                85,
                f"dial-prefix walking from {call.src.ip}: {e164} tried with {count} different "
                f"prefixes in {self._cfg.window_s:g} s (last {prefix})",
                key,
                {
                    "e164": e164,
                    "prefixes_in_window": str(count),
                    "dial_prefix": prefix,
                    "dialled": (call.callee or "")[:64],
                    "account": (call.account or "")[:64],
                },
                RecommendedAction("TEMP_BLOCK", self._cfg.block_ttl_s),
            )
        ]


# -- CallVelocity --------------------------------------------------------------------------------


class CallVelocityConfig(DetectorConfig):
    calls_per_minute: int = Field(
        20,
        ge=1,
        description=(
            "Call attempts by one account within a sliding 60 s window that make a burst "
            "(OpenSIPS fraud_detection `cpm`, 60 one-second slots, sliding). OpenSIPS has no "
            "default (0 = off); ours: 20/min is one call each 3 s, beyond a person and typical "
            "of dialer scripts. Raise it for PBX trunk accounts."
        ),
    )
    calls_per_day: int = Field(
        500,
        ge=1,
        description=(
            "Call attempts by one account in one day (OpenSIPS fraud_detection `total calls`, "
            "reset when the day changes; day boundaries at utc_offset_minutes). No published "
            "default; 500 as the largest of VoIPmonitor's example sequential limits "
            "(50/100/500)."
        ),
    )
    utc_offset_minutes: int = Field(
        0,
        ge=-14 * 60,
        le=14 * 60,
        description="Fixed offset of the operator's day from UTC, minutes (no DST rules).",
    )
    max_accounts: int = Field(
        100_000, ge=1, description="Accounts tracked per table; least recent evicted."
    )


@register
class CallVelocity(_CallDetector):
    """Too many call attempts by one account: per minute (sliding) or per day.

    Signal: STARTED calls per account (digest username, else From user, else source IP);
    a hit when the 60 s count reaches ``calls_per_minute`` or the day's count reaches
    ``calls_per_day``.
    Why: a hacked account or PBX is used to pump as many paid minutes as possible before
    anyone notices; volume is the cheapest signal (OpenSIPS fraud_detection cpm/total).
    Defaults' anchor: OpenSIPS fraud_detection (cpm on 60 sliding one-second slots; total per
    day) - thresholds ours, see the fields.
    Known false positives: PBX trunks and call centres registered as one account.
    """

    id: ClassVar[str] = "toll_fraud.call_velocity"
    Config: ClassVar[type[DetectorConfig]] = CallVelocityConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        cfg = config if config is not None else CallVelocityConfig()
        assert isinstance(cfg, CallVelocityConfig)
        super().__init__(cfg, cfg.max_accounts)
        self._cfg = cfg
        self._per_minute: SlidingWindowCounter[str] = SlidingWindowCounter(
            cfg.max_accounts, 60.0, cfg.calls_per_minute
        )
        # (account, day) -> calls; a day-long TTL forgets yesterday's counts.
        self._per_day: TtlMap[str, int] = TtlMap(cfg.max_accounts, 86_400.0)

    def _tables(self) -> Sequence[_Expiring]:
        return (self._throttle, self._per_minute, self._per_day)

    def on_call(self, event: CallEvent) -> list[Finding]:
        call = event.call
        if event.phase is not CallPhase.STARTED or self.allowed(call.src.ip):
            return []
        cfg = self._cfg
        caller = _caller(event)
        per_minute = self._per_minute.add(caller, event.ts)
        day = int((event.ts + cfg.utc_offset_minutes * 60) // 86_400)
        day_key = f"{caller}|{day}"
        per_day = (self._per_day.get(day_key, event.ts) or 0) + 1
        self._per_day.set(day_key, per_day, event.ts)
        if per_minute >= cfg.calls_per_minute:
            what, count, limit = "minute", per_minute, cfg.calls_per_minute
        elif per_day >= cfg.calls_per_day:
            what, count, limit = "day", per_day, cfg.calls_per_day
        else:
            return []
        if not self._allow_hit(f"{caller}|{what}", event.ts):
            return []
        return [
            self._account_hit(
                event,
                caller,
                Severity.MEDIUM,
                70,
                f"call velocity: {caller[:_MAX_TEXT_CHARS]} placed {count} calls in one {what} "
                f"(limit {limit}) from {call.src.ip}, last to {(call.callee or '')[:64]}",
                {
                    "calls_in_" + what: str(count),
                    "threshold": str(limit),
                },
                RecommendedAction("INVESTIGATE"),
            )
        ]


# -- CallConcurrency -----------------------------------------------------------------------------


class CallConcurrencyConfig(DetectorConfig):
    max_concurrent: int = Field(
        10,
        ge=1,
        description=(
            "Answered, not yet ended calls of one account that make a finding (OpenSIPS "
            "fraud_detection `concurrent calls`, Kamailio dialog profiles). No published "
            "default; 10 is far above a person or small office and below what IRSF pumping "
            "through a hacked PBX reaches. Raise it for trunk accounts."
        ),
    )
    max_accounts: int = Field(100_000, ge=1, description="Accounts whose hits are rate-limited.")


@register
class CallConcurrency(_CallDetector):
    """Too many simultaneous answered calls on one account.

    Signal: on every ANSWERED call, the tracker's count of answered, unended calls of its
    account; a hit when it reaches ``max_concurrent``.
    Why: fraudsters run many parallel calls on a hacked account to maximise minutes.
    Defaults' anchor: OpenSIPS fraud_detection concurrent calls (decremented on every ending,
    fixing its #949), thresholds ours.
    Known false positives: trunk accounts; calls whose BYE the capture missed stay counted
    until the tracker's 12 h timeout.
    """

    id: ClassVar[str] = "toll_fraud.call_concurrency"
    Config: ClassVar[type[DetectorConfig]] = CallConcurrencyConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        cfg = config if config is not None else CallConcurrencyConfig()
        assert isinstance(cfg, CallConcurrencyConfig)
        super().__init__(cfg, cfg.max_accounts)
        self._cfg = cfg

    def on_call(self, event: CallEvent) -> list[Finding]:
        call = event.call
        if event.phase is not CallPhase.ANSWERED or self.allowed(call.src.ip):
            return []
        if event.concurrent_account < self._cfg.max_concurrent:
            return []
        caller = _caller(event)
        if not self._allow_hit(caller, event.ts):
            return []
        return [
            self._account_hit(
                event,
                caller,
                Severity.MEDIUM,
                70,
                f"{event.concurrent_account} concurrent answered calls on "
                f"{caller[:_MAX_TEXT_CHARS]} from {call.src.ip} "
                f"(limit {self._cfg.max_concurrent})",
                {"concurrent_calls": str(event.concurrent_account)},
                RecommendedAction("INVESTIGATE"),
            )
        ]


# -- SequentialDialing ---------------------------------------------------------------------------


class SequentialDialingConfig(DialPlanConfig):
    same_number_calls: int = Field(
        10,
        ge=2,
        description=(
            "Consecutive calls by one account to the exact same number that make a finding "
            "(OpenSIPS fraud_detection `sequential calls`; no published default). 10: well "
            "past a person redialling a busy line."
        ),
    )
    incrementing_calls: int = Field(
        10,
        ge=2,
        description=(
            "Consecutive calls by one account to numbers each one higher than the last "
            "(a range sweep, e.g. testing IRSF test numbers). No anchor: no engine detects it; "
            "same 10 as same_number_calls."
        ),
    )
    idle_reset_s: float = Field(
        3600.0,
        gt=0,
        description="A run is forgotten when the account places no call for this long "
        "(VoIPmonitor's longer sequential interval example, 3600 s).",
    )
    max_accounts: int = Field(100_000, ge=1, description="Accounts tracked; least recent evicted.")


@dataclass(frozen=True, slots=True)
class _Run:
    last: str
    same: int
    incrementing: int


@register
class SequentialDialing(_CallDetector):
    """One account calls the same number, or consecutive numbers, over and over.

    Signal: per account, the run of consecutive STARTED calls to the exact same callee
    (OpenSIPS seq_calls; international numbers compared after normalisation), and the run of
    callees each one greater than the previous.
    Why: fraud pumping repeats calls to one revenue-share number; range sweeps walk numbers.
    Users ask for it (magnusbilling/magnusbilling#506: "same number dialled many times").
    Defaults' anchor: OpenSIPS fraud_detection seq_calls (consecutive, exact number), kept per
    account (its #888 shared the state across users) and bounded (its #3411 never freed it).
    Known false positives: auto-redial to a busy number; alarm and test systems.
    """

    id: ClassVar[str] = "toll_fraud.sequential_dialing"
    Config: ClassVar[type[DetectorConfig]] = SequentialDialingConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        cfg = config if config is not None else SequentialDialingConfig()
        assert isinstance(cfg, SequentialDialingConfig)
        super().__init__(cfg, cfg.max_accounts)
        self._cfg = cfg
        self._runs: TtlMap[str, _Run] = TtlMap(cfg.max_accounts, cfg.idle_reset_s)

    def _tables(self) -> Sequence[_Expiring]:
        return (self._throttle, self._runs)

    def on_call(self, event: CallEvent) -> list[Finding]:
        call = event.call
        callee = call.callee
        if event.phase is not CallPhase.STARTED or not callee or self.allowed(call.src.ip):
            return []
        cfg = self._cfg
        # 01148... and 901148... are the same number: compare E.164 when there is one.
        callee = normalize_dialled(callee, cfg)[0] or callee
        caller = _caller(event)
        run = self._runs.get(caller, event.ts)
        if run is None:
            run = _Run(callee, 1, 1)
        elif callee == run.last:
            run = _Run(callee, run.same + 1, 1)
        elif _is_next(run.last, callee):
            run = _Run(callee, 1, run.incrementing + 1)
        else:
            run = _Run(callee, 1, 1)
        self._runs.set(caller, run, event.ts)
        if run.same >= cfg.same_number_calls:
            kind, count = "same number", run.same
        elif run.incrementing >= cfg.incrementing_calls:
            kind, count = "incrementing numbers", run.incrementing
        else:
            return []
        if not self._allow_hit(f"{caller}|{kind}", event.ts):
            return []
        return [
            self._account_hit(
                event,
                caller,
                Severity.MEDIUM,
                65,
                f"sequential dialing: {caller[:_MAX_TEXT_CHARS]} from {call.src.ip} made {count} "
                f"consecutive calls to {kind} (last {callee[:64]})",
                {"pattern": kind, "consecutive_calls": str(count)},
                RecommendedAction("INVESTIGATE"),
            )
        ]


def _is_next(previous: str, current: str) -> bool:
    """``current`` is ``previous`` + 1, both all digits (after an E.164 '+') of one length."""
    previous, current = previous.removeprefix("+"), current.removeprefix("+")
    if len(previous) != len(current) or not (previous.isdigit() and current.isdigit()):
        return False
    return int(current) == int(previous) + 1


# -- OffHoursBurst -------------------------------------------------------------------------------


class OffHoursBurstConfig(DetectorConfig):
    business_hours: str = Field(
        "08:00-19:00",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-4]):[0-5][0-9]$",
        description=(
            "Local business hours 'HH:MM-HH:MM' (OpenSIPS fraud_detection rule start/end "
            "format). Default 08:00-19:00, a typical office day; set per customer."
        ),
    )
    business_days: str = Field(
        "Mon-Fri",
        pattern=r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun)(-(Mon|Tue|Wed|Thu|Fri|Sat|Sun))?$",
        description="Business days, 'Mon-Fri' style (OpenSIPS fraud_detection rule days format).",
    )
    utc_offset_minutes: int | None = Field(
        None,
        ge=-14 * 60,
        le=14 * 60,
        description=(
            "Fixed offset of local time from UTC, minutes (no DST; no zoneinfo files are read "
            "by the core). Unset (default): hours are read in UTC, which is nobody's office "
            "day in particular, so findings stay low severity; set it (0 for UTC) to make "
            "them medium."
        ),
    )
    window_s: float = Field(
        600.0,
        gt=0,
        description="Sliding window, seconds (600 s as VoIPmonitor's sequential interval example).",
    )
    calls_per_window: int = Field(
        10,
        ge=1,
        description=(
            "Off-hours call attempts by one account within the window that make a burst. "
            "No published default; 10 in 10 min at night is far above a person working late "
            "and typical of weekend/night IRSF pumping."
        ),
    )
    max_accounts: int = Field(100_000, ge=1, description="Accounts tracked; least recent evicted.")


@register
class OffHoursBurst(_CallDetector):
    """A burst of calls from one account outside business hours.

    Signal: STARTED calls whose local time (UTC + fixed offset) falls outside
    ``business_hours`` on ``business_days``, counted per account in a sliding window.
    Why: PBX hacking is monetised at night and at weekends, when nobody watches.
    Defaults' anchor: OpenSIPS fraud_detection rules (hours + days per profile); counts ours.
    Severity: low until ``utc_offset_minutes`` is set - captures are timestamped in UTC, and
    "off hours" in UTC is the middle of the working day in half the world; medium once set.
    Known false positives: night shifts, 24/7 call centres - give them their own hours.
    """

    id: ClassVar[str] = "toll_fraud.off_hours_burst"
    Config: ClassVar[type[DetectorConfig]] = OffHoursBurstConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        cfg = config if config is not None else OffHoursBurstConfig()
        assert isinstance(cfg, OffHoursBurstConfig)
        super().__init__(cfg, cfg.max_accounts)
        self._cfg = cfg
        start, end = cfg.business_hours.split("-")
        self._start = _minutes(start)
        self._end = _minutes(end)
        first, _, last = cfg.business_days.partition("-")
        a, b = _WEEKDAYS.index(first), _WEEKDAYS.index(last or first)
        self._days = {d % 7 for d in range(a, (b if b >= a else b + 7) + 1)}
        self._counts: SlidingWindowCounter[str] = SlidingWindowCounter(
            cfg.max_accounts, cfg.window_s, cfg.calls_per_window
        )

    def _tables(self) -> Sequence[_Expiring]:
        return (self._throttle, self._counts)

    def off_hours(self, ts: float) -> bool:
        """True when packet time ``ts`` is outside business hours (local, fixed offset)."""
        local = ts + (self._cfg.utc_offset_minutes or 0) * 60
        days = int(local // 86_400)
        weekday = (days + 3) % 7  # 1970-01-01 was a Thursday (Mon = 0)
        minute = int(local % 86_400) // 60
        if weekday not in self._days:
            return True
        if self._start <= self._end:
            return not self._start <= minute < self._end
        return self._end <= minute < self._start  # hours that span midnight

    def on_call(self, event: CallEvent) -> list[Finding]:
        call = event.call
        if event.phase is not CallPhase.STARTED or self.allowed(call.src.ip):
            return []
        if not self.off_hours(event.ts):
            return []
        cfg = self._cfg
        caller = _caller(event)
        count = self._counts.add(caller, event.ts)
        if count < cfg.calls_per_window or not self._allow_hit(caller, event.ts):
            return []
        offset = cfg.utc_offset_minutes
        clock = "UTC, offset not configured" if offset is None else f"UTC{offset:+d} min"
        return [
            self._account_hit(
                event,
                caller,
                Severity.LOW if offset is None else Severity.MEDIUM,
                40 if offset is None else 60,
                f"off-hours burst: {caller[:_MAX_TEXT_CHARS]} from {call.src.ip} placed {count} "
                f"calls in {cfg.window_s:g} s outside {cfg.business_hours} "
                f"{cfg.business_days} ({clock})",
                {"calls_in_window": str(count)},
                RecommendedAction("MONITOR" if offset is None else "INVESTIGATE"),
            )
        ]


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)
