"""spoofing: caller-ID and identity spoofing (conventions.md §1).

Theory of operation
-------------------
All four detectors judge the identity an *initial* request presents - an INVITE without a To
tag, or an out-of-dialog MESSAGE - one observation at a time. The only state is the Call-IDs
judged in the last 32 s (RFC 3261 Timer B), so that a retransmission, or the INVITE re-sent with
credentials after a 401/407, is not counted as one more spoofed call; it is a bounded table
(``max_recent_calls``). The engine aggregates hits per source into episodes.

The calling identity is the P-Asserted-Identity (RFC 3325) when present, else the From user.
RFC 3325 §5 draws the line: a PAI is believed only when it comes from inside the trust domain
(``trusted_networks``); from outside it must be stripped, and a PAI that differs from From is
normal *inside* the domain (a PBX asserting its DID for an extension). Nothing is trusted until
configured, so with an empty ``trusted_networks`` these detectors cannot tell a trunk from an
attacker and stay at ``low``; configured, a source outside the trust domain raises severity.

Numbers are judged only when a user part looks like one (digits with an optional ``+`` and
visual separators). A ``+`` number is judged as E.164; one without ``+`` only when
``home_region`` is set and it has at least ``min_national_digits`` digits - shorter users are
PBX extensions and short codes, which every benign capture is full of - first as a national
number of that region, then, if that is not valid, as E.164 written without its ``+`` (what
many trunks send). Validity comes from libphonenumber (``phonenumbers``), as Kamailio's
phonenum module does (detection-anchors §2.3); verdicts are memoised in a small bounded cache.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import ClassVar, NamedTuple

import phonenumbers
from pydantic import Field, field_validator

from sipwarden.detect.base import Detector, DetectorConfig
from sipwarden.detect.finding import Finding, RecommendedAction, Target
from sipwarden.detect.networks import NetworkList, NetworkSet
from sipwarden.detect.observation import Observation
from sipwarden.detect.registry import register
from sipwarden.detect.tables import TtlMap
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.sip import NameAddr, Request, SipParseError

__all__ = [
    "CallerEqualsCallee",
    "CallerEqualsCalleeConfig",
    "IdentityMismatch",
    "IdentityMismatchConfig",
    "ImpossibleNumber",
    "ImpossibleNumberConfig",
    "NationalCliFromAbroad",
    "NationalCliFromAbroadConfig",
    "calling_number",
]

#: Attacker-chosen strings copied into indicators are cut to this length.
_MAX_TEXT_CHARS = 64
#: Visual separators RFC 3966 §5.1.1 allows in a telephone-subscriber (and phones put in users).
_SEPARATORS = str.maketrans("", "", "-.() ")
_PHONE_LIKE = re.compile(r"\+?[0-9]{1,20}")
_MONITOR = RecommendedAction("MONITOR", 3600)
#: Numbers classified and remembered (a bounded memo of a pure function, not detector state).
_NUMBER_CACHE_SIZE = 4096
#: A judged request's Call-ID is remembered this long: RFC 3261 Timer B (64×T1 = 32 s), after
#: which its UAC has stopped retransmitting it.
_RETRANSMISSION_S = 32.0
#: Call-IDs longer than this are kept as a digest, so that two long ones never collide.
_MAX_CALL_ID_CHARS = 128


class _SpoofingConfig(DetectorConfig):
    """What the spoofing detectors share: the trust boundary and the numbering plan."""

    @field_validator("home_region")
    @classmethod
    def _valid_region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a region libphonenumber knows (e.g. 'GB', 'US')")
        return region

    trusted_networks: NetworkList = Field(
        (),
        description=(
            "CIDRs inside the RFC 3325 trust domain: their P-Asserted-Identity is believed. "
            "Empty by default - nothing is trusted until configured (RFC 3325 §5; Kamailio "
            "permissions allow_trusted / Asterisk PJSIP trust_id_inbound are likewise opt-in, "
            "detection-anchors §1a) - and then findings stay at low severity."
        ),
    )
    home_region: str | None = Field(
        None,
        description=(
            "ISO 3166 region of the operator's numbering plan (e.g. 'GB'); national numbers "
            "without '+' are judged relative to it. None (default): only '+' numbers are "
            "judged, because a national number means nothing without its plan."
        ),
    )
    min_national_digits: int = Field(
        7,
        ge=1,
        le=15,
        description=(
            "Users without '+' shorter than this are PBX extensions or short codes and are not "
            "judged as numbers. No published anchor (ITU-T E.164 fixes only the 15-digit "
            "maximum): subscriber numbers are 7 digits or more in most national plans, while "
            "PBX extensions and short codes are shorter - the corpus' benign extensions (101, "
            "200, 816666) stay below it."
        ),
    )
    max_recent_calls: int = Field(
        10_000,
        ge=1,
        description=(
            "Call-IDs of judged requests remembered for 32 s (RFC 3261 Timer B) so that their "
            "retransmissions are judged once; when full the least recent is evicted and "
            "counted. No published anchor: 10 000 holds over 300 new calls per second."
        ),
    )


def _cut(text: str) -> str:
    return text[:_MAX_TEXT_CHARS]


def _initial_request(obs: Observation) -> Request | None:
    """An INVITE that starts a dialog or an out-of-dialog MESSAGE: what presents a caller
    (retransmissions included; :meth:`_SpoofingDetector.first_sight` drops those)."""
    request = obs.request
    if request is None or request.method not in ("INVITE", "MESSAGE"):
        return None
    try:
        to = request.to
    except SipParseError:
        return None
    if to is not None and to.tag is not None:
        return None  # a re-INVITE or in-dialog MESSAGE repeats an identity already judged
    return request


def _user(address: NameAddr | None) -> str | None:
    if address is None or address.wildcard:
        return None
    try:
        return address.uri.user_unescaped
    except ValueError:
        return None


def _from_user(request: Request) -> str | None:
    try:
        return _user(request.from_)
    except SipParseError:
        return None


def _asserted_users(request: Request) -> list[str]:
    try:
        identities = request.p_asserted_identity
    except SipParseError:
        return []
    return [user for user in (_user(a) for a in identities[:4]) if user]


def calling_number(request: Request) -> tuple[str, str] | None:
    """The identity an initial request presents as ``(header, user)``: the first
    P-Asserted-Identity user, else the From user; None when neither has a user."""
    asserted = _asserted_users(request)
    if asserted:
        return "p-asserted-identity", asserted[0]
    user = _from_user(request)
    return ("from", user) if user else None


class _Number(NamedTuple):
    """A user part read as a telephone number, classified once (see :func:`_classify`)."""

    #: The digits as written (separators removed, '+' kept).
    digits: str
    #: E.164 with '+' when it parsed, else ``digits`` (for comparisons).
    e164: str
    parsed: bool
    possible: bool
    valid: bool
    #: The region of a valid number (None otherwise).
    region: str | None


@lru_cache(maxsize=_NUMBER_CACHE_SIZE)
def _classify(digits: str, region: str | None) -> _Number:
    """libphonenumber's verdict on ``digits`` (parsed relative to ``region``), memoised:
    parsing costs tens of microseconds and calling numbers repeat across calls."""
    try:
        parsed = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        return _Number(digits, digits, False, False, False, None)
    valid = phonenumbers.is_valid_number(parsed)
    return _Number(
        digits,
        phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
        True,
        phonenumbers.is_possible_number(parsed),
        valid,
        phonenumbers.region_code_for_number(parsed) if valid else None,
    )


def _number(user: str | None, config: _SpoofingConfig) -> _Number | None:
    """``user`` as a number to judge, or None (not a number, or a national number that cannot
    be judged: no home_region, or shorter than min_national_digits). A number that does not
    parse at all (unknown country code) has ``parsed`` False."""
    if not user:
        return None
    digits = user.translate(_SEPARATORS)
    if not _PHONE_LIKE.fullmatch(digits):
        return None
    if digits.startswith("+"):
        return _classify(digits, None)
    if config.home_region is None or len(digits) < config.min_national_digits:
        return None
    national = _classify(digits, config.home_region)
    if national.valid:
        return national
    # Many trunks send E.164 without its '+' ("447700900123"): a number valid that way is
    # valid, not an impossible national one.
    international = _classify("+" + digits, None)
    return international if international.valid else national


class _SpoofingDetector(Detector):
    """Trust-boundary helpers shared by the family."""

    config: _SpoofingConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, _SpoofingConfig)
        self._trusted = NetworkSet(self.config.trusted_networks)
        # "METHOD Call-ID" of requests judged lately -> when.
        self._recent: TtlMap[str, float] = TtlMap(self.config.max_recent_calls, _RETRANSMISSION_S)

    def first_sight(self, obs: Observation) -> Request | None:
        """The initial request of ``obs`` (:func:`_initial_request`) to judge: None for an
        allow-listed source, and when one with its method and Call-ID was judged within the
        last 32 s (a retransmission, or the same call's INVITE re-sent with credentials,
        presents the identity already judged)."""
        if self.allowed(obs.src.ip):
            return None
        request = _initial_request(obs)
        if request is None:
            return None
        try:
            call_id = request.call_id
        except SipParseError:
            call_id = None
        if call_id:
            if len(call_id) > _MAX_CALL_ID_CHARS:
                raw = call_id.encode("utf-8", "surrogateescape")
                call_id = hashlib.blake2b(raw, digest_size=16).hexdigest()
            key = f"{request.method} {call_id}"
            if self._recent.get(key, obs.ts) is not None:
                return None
            self._recent.set(key, obs.ts, obs.ts)
        return request

    def advance(self, now: float) -> list[Finding]:
        self._recent.expire(now)
        return []

    def next_deadline(self) -> float | None:
        return self._recent.next_expiry()

    def state_size(self) -> int:
        return len(self._recent)

    def evictions(self) -> int:
        return self._recent.evictions

    def trusted(self, ip: str) -> bool:
        return ip in self._trusted

    def boundary_configured(self) -> bool:
        return bool(self._trusted)


# -- IdentityMismatch ----------------------------------------------------------------------------


class IdentityMismatchConfig(_SpoofingConfig):
    pass


@register
class IdentityMismatch(_SpoofingDetector):
    """A P-Asserted-Identity from outside the trust domain that differs from From.

    Signal: an initial INVITE/MESSAGE carrying P-Asserted-Identity whose users all differ from
    the From user (compared as E.164 when both parse), sent by a source outside
    ``trusted_networks``; with a boundary configured, a PAI equal to From from outside it is
    reported at low too (it should have been stripped). Why: RFC 3325 §5 - a PAI is only as
    good as the network that inserted it; an untrusted party asserting someone else's identity
    is how caller-ID spoofing gets past a proxy that forgets to strip it.
    Defaults' anchor: RFC 3325 §5 and the opt-in trust lists of Kamailio permissions /
    PJSIP trust_id_inbound (detection-anchors §1a "From/PAI trust-boundary consistency").
    Severity: low with nothing configured; medium when a configured boundary is crossed.
    Known false positives: a PBX outside the boundary asserting its main DID for an extension
    (add it to trusted_networks); proxies in the trust domain that are not listed.
    """

    id: ClassVar[str] = "spoofing.identity_mismatch"
    threat: ClassVar[Threat] = Threat.SPOOFING
    Config: ClassVar[type[DetectorConfig]] = IdentityMismatchConfig

    def observe(self, obs: Observation) -> list[Finding]:
        src = obs.src.ip
        if self.trusted(src):
            return []
        request = self.first_sight(obs)
        if request is None:
            return []
        asserted = _asserted_users(request)
        if not asserted:
            return []
        from_user = _from_user(request) or ""
        same = any(_same_identity(user, from_user, self.config) for user in asserted)
        configured = self.boundary_configured()
        if same and not configured:
            return []
        if same:
            severity, confidence = Severity.LOW, 50
            summary = f"P-Asserted-Identity {_cut(asserted[0])!r} from untrusted {src}"
        else:
            severity = Severity.MEDIUM if configured else Severity.LOW
            confidence = 70 if configured else 40
            summary = (
                f"P-Asserted-Identity {_cut(asserted[0])!r} differs from From "
                f"{_cut(from_user)!r}, sent by {'untrusted' if configured else 'unlisted'} {src}"
            )
        return [
            self.hit(
                obs,
                severity,
                confidence,
                summary,
                src,
                target=Target(obs.dst.ip, obs.dst.port),
                indicators={
                    "asserted_identity": _cut(asserted[0]),
                    "from_user": _cut(from_user),
                    "trust_boundary": "configured" if configured else "unconfigured",
                },
                action=_MONITOR,
            )
        ]


def _same_identity(a: str, b: str, config: _SpoofingConfig) -> bool:
    if a == b:
        return True
    na, nb = _number(a, config), _number(b, config)
    if na is not None and nb is not None:
        return na.e164 == nb.e164
    return a.translate(_SEPARATORS).lstrip("+") == b.translate(_SEPARATORS).lstrip("+")


# -- ImpossibleNumber ----------------------------------------------------------------------------


class ImpossibleNumberConfig(_SpoofingConfig):
    pass


@register
class ImpossibleNumber(_SpoofingDetector):
    """A calling number no numbering plan can hold, or one that was never allocated.

    Signal: the calling identity (PAI, else From) of an initial INVITE/MESSAGE is a '+'
    number, or a national number of at least ``min_national_digits`` digits with
    ``home_region`` set, and libphonenumber says it is not possible (wrong length, unknown
    country code) or possible but not valid (no allocated range). Why: robocallers and
    spoofers draw CLIs at random; a real subscriber's number is always valid.
    Defaults' anchor: Kamailio phonenum's ``valid`` flag and OpenSIPS stir_shaken
    ``e164_strict_mode`` / ``e164_max_length=15`` (detection-anchors §1a, §2.5).
    Severity: low; an impossible '+' number from outside a configured trust boundary is medium.
    Known false positives: ranges allocated after the installed phonenumbers release
    ("invalid", hence low); carriers that send national numbers without a region hint.
    """

    id: ClassVar[str] = "spoofing.impossible_number"
    threat: ClassVar[Threat] = Threat.SPOOFING
    Config: ClassVar[type[DetectorConfig]] = ImpossibleNumberConfig

    def observe(self, obs: Observation) -> list[Finding]:
        src = obs.src.ip
        request = self.first_sight(obs)
        if request is None:
            return []
        presented = calling_number(request)
        if presented is None:
            return []
        header, user = presented
        number = _number(user, self.config)
        if number is None:
            return []
        if number.valid:
            return []
        possible = number.possible
        reason = "invalid" if possible else "impossible"
        # Only an explicit E.164 claim escalates: a national reading depends on the sender
        # using our plan, which a foreign trunk need not.
        escalate = (
            not possible
            and number.digits.startswith("+")
            and self.boundary_configured()
            and not self.trusted(src)
        )
        return [
            self.hit(
                obs,
                Severity.MEDIUM if escalate else Severity.LOW,
                70 if escalate else 50,
                f"{reason} calling number {_cut(user)!r} in the {header} header, from {src}",
                src,
                target=Target(obs.dst.ip, obs.dst.port),
                indicators={"calling_number": _cut(user), "header": header, "reason": reason},
                action=_MONITOR,
            )
        ]


# -- CallerEqualsCallee --------------------------------------------------------------------------


class CallerEqualsCalleeConfig(_SpoofingConfig):
    pass


@register
class CallerEqualsCallee(_SpoofingDetector):
    """A call whose calling number is the number it calls.

    Signal: an initial INVITE whose calling identity (PAI, else From) equals its Request-URI
    user, both numbers (E.164 when they parse; extensions shorter than
    ``min_national_digits`` are skipped). Why: presenting the callee's own number is the
    classic voicemail-PIN bypass and a "neighbour spoofing" robocall habit; a phone calling
    itself by full number is rare.
    Defaults' anchor: no published anchor in detection-anchors.md (no system in §1 checks it);
    the digit floor is the family's ``min_national_digits``.
    Severity: low; medium from outside a configured trust boundary.
    Known false positives: subscribers dialling their own number to reach voicemail from a
    network that routes it so (then the source is trusted and the finding stays low).
    """

    id: ClassVar[str] = "spoofing.caller_equals_callee"
    threat: ClassVar[Threat] = Threat.SPOOFING
    Config: ClassVar[type[DetectorConfig]] = CallerEqualsCalleeConfig

    def observe(self, obs: Observation) -> list[Finding]:
        src = obs.src.ip
        request = self.first_sight(obs)
        if request is None or request.method != "INVITE":
            return []
        presented = calling_number(request)
        if presented is None:
            return []
        header, caller = presented
        try:
            callee = request.request_uri.user_unescaped
        except SipParseError:
            return []
        if not callee or caller.translate(_SEPARATORS)[-6:] != callee.translate(_SEPARATORS)[-6:]:
            return []  # cheap test first: equal numbers end alike in any spelling
        caller_number = _plain_number(caller, self.config)
        callee_number = _plain_number(callee, self.config)
        if caller_number is None or caller_number != callee_number:
            return []
        escalate = self.boundary_configured() and not self.trusted(src)
        return [
            self.hit(
                obs,
                Severity.MEDIUM if escalate else Severity.LOW,
                60 if escalate else 45,
                f"call from {_cut(caller)!r} to the same number, from {src}",
                src,
                target=Target(obs.dst.ip, obs.dst.port, _cut(callee or "")),
                indicators={"calling_number": _cut(caller), "header": header},
                action=_MONITOR,
            )
        ]


def _plain_number(user: str | None, config: _SpoofingConfig) -> str | None:
    """A number for equality: E.164 when it parses, else its digits when long enough."""
    number = _number(user, config)
    if number is not None:
        return number.e164
    if user is None:
        return None
    digits = user.translate(_SEPARATORS)
    if _PHONE_LIKE.fullmatch(digits) and len(digits.lstrip("+")) >= config.min_national_digits:
        return digits.lstrip("+")
    return None


# -- NationalCliFromAbroad -----------------------------------------------------------------------


class NationalCliFromAbroadConfig(_SpoofingConfig):
    international_trunks: NetworkList = Field(
        (),
        description=(
            "CIDRs of interconnects that carry calls from abroad. Empty by default: the "
            "detector is silent until both this and home_region are set."
        ),
    )


@register
class NationalCliFromAbroad(_SpoofingDetector):
    """A call arriving on an international trunk that presents a home-country number.

    Signal: an initial INVITE from a source in ``international_trunks`` whose calling identity
    (PAI, else From) is a valid number of ``home_region`` (libphonenumber's region, so a
    shared country code such as +1 is told apart). Why: scam call centres
    abroad present local CLIs so that people answer; a home subscriber's call from abroad only
    legitimately arrives this way when roaming or forwarded.
    Defaults' anchor: no system in detection-anchors.md does it; the rule follows the national
    regulators' "block calls from abroad presenting a domestic CLI" policy (e.g. Ofcom's
    2022 guidance under General Condition C6; from memory, not in the anchors file). Silent
    until configured, so no threshold to anchor.
    Severity: medium (roaming subscribers and call forwarding are the false positives).
    Known false positives: roaming home subscribers whose calls return over an international
    interconnect; forwarded calls (check History-Info/Diversion before blocking).
    """

    id: ClassVar[str] = "spoofing.national_cli_from_abroad"
    threat: ClassVar[Threat] = Threat.SPOOFING
    Config: ClassVar[type[DetectorConfig]] = NationalCliFromAbroadConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, NationalCliFromAbroadConfig)
        self._trunks = NetworkSet(self.config.international_trunks)

    def observe(self, obs: Observation) -> list[Finding]:
        src = obs.src.ip
        home = self.config.home_region
        if home is None or src not in self._trunks:
            return []
        request = self.first_sight(obs)
        if request is None or request.method != "INVITE":
            return []
        presented = calling_number(request)
        if presented is None:
            return []
        header, user = presented
        number = _number(user, self.config)
        if number is None or number.region != home:
            # Not a number; invalid (the impossible_number detector's case); or a valid number
            # of another region, including one sharing the country code (+1, +7, +44).
            return []
        return [
            self.hit(
                obs,
                Severity.MEDIUM,
                65,
                f"{home} number {number.e164} presented on international trunk {src}",
                src,
                target=Target(obs.dst.ip, obs.dst.port),
                indicators={"calling_number": number.e164, "header": header, "region": home},
                action=_MONITOR,
            )
        ]
