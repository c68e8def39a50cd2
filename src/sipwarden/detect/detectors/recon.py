"""recon: scanning and enumeration (conventions.md §1)."""

from __future__ import annotations

import ipaddress
import re
from typing import ClassVar

from pydantic import Field

from sipwarden.detect.base import Detector, DetectorConfig
from sipwarden.detect.finding import Evidence, Finding, RecommendedAction, Target
from sipwarden.detect.observation import Observation
from sipwarden.detect.registry import register
from sipwarden.detect.tables import DistinctCounter, LruSet, TableStats, TtlMap
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.detect.tracker import Transaction
from sipwarden.net import Endpoint
from sipwarden.sip import NameAddr, Request, SipParseError, Via

__all__ = [
    "ExtensionEnumeration",
    "ExtensionEnumerationConfig",
    "HostSweep",
    "HostSweepConfig",
    "ScannerFingerprint",
    "ScannerFingerprintConfig",
    "ScannerUserAgent",
]

# Kamailio's default config blocks User-Agents matching
# friendly|scanner|sipcli|sipvicious|VaxSIPUserAgent|pplsip; the secfilter example list and the
# ET VOIP/SCAN rules add the rest (shared/reference/detection-anchors.md §2.2). "Asterisk PBX"
# is left out on purpose: real Asterisk sends it (ET sid 2012296 fires on it).
_DEFAULT_SIGNATURES = (
    "friendly-scanner",
    "friendly",
    "scanner",
    "sipcli",
    "sipvicious",
    "vaxsipuseragent",
    "pplsip",
    "sundayddr",
    "iwar",
    "simplesip",
    "sip call",
    "ozeki",
    "voipsec",
    "sipscan",
    "conaito",
    "usaairport",
    "portsip voip sdk",
    "zxcvfdf11",
    "fdgddfg546df4g8d5f",
    "siptest",
    "nmap nse",
    "sivus",
    "smap",
    "voiper",
)


#: Attacker strings kept in tables or indicators are cut to this length.
_MAX_TEXT = 128


class ScannerUserAgentConfig(DetectorConfig):
    signatures: tuple[str, ...] = Field(
        _DEFAULT_SIGNATURES,
        description=(
            "Case-insensitive substrings of User-Agent (or of the From display name) that name "
            "a scanning tool. Default: Kamailio default-config regex + secfilter example list "
            "+ ET VOIP/SCAN signatures; 'Asterisk PBX' deliberately excluded (real Asterisk)."
        ),
    )


def _scanner_signature(request: Request, signatures: tuple[str, ...]) -> str | None:
    """The first of ``signatures`` (lower-case) found in the request's User-Agent or, failing
    that, its From display name; None when neither names a scanner."""
    user_agent = (request.headers.get("user-agent") or "").lower()
    try:
        sender = request.from_
    except SipParseError:
        sender = None
    display = ((sender.display_name or "") if sender is not None else "").lower()
    for text in (user_agent, display):
        for signature in signatures:
            if signature in text:
                return signature
    return None


@register
class ScannerUserAgent(Detector):
    """A request whose User-Agent or From display name names a known SIP scanner.

    Signal: User-Agent / From display name substrings (SIPVicious 'friendly-scanner', sipcli,
    sundayddr …). Why: tools announce themselves by default and most attackers do not change
    it. Defaults' anchor: Kamailio default config, secfilter, ET rules. Known false positives:
    a PBX vendor string containing 'scanner'; a renamed tool is missed (later detectors look at
    behaviour instead).
    """

    id: ClassVar[str] = "recon.scanner_user_agent"
    threat: ClassVar[Threat] = Threat.RECON
    Config: ClassVar[type[DetectorConfig]] = ScannerUserAgentConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, ScannerUserAgentConfig)
        self._signatures = tuple(s.lower() for s in self.config.signatures)

    def observe(self, obs: Observation) -> list[Finding]:
        request = obs.request
        if request is None or self.allowed(obs.src.ip):
            return []
        matched = _scanner_signature(request, self._signatures)
        if matched is None:
            return []
        user_agent = request.headers.get("user-agent") or ""
        try:
            user = request.request_uri.user
        except SipParseError:
            user = None
        indicators = {"signature": matched}
        if user_agent:
            indicators["user_agent"] = user_agent[:_MAX_TEXT]
        return [
            self.hit(
                obs,
                Severity.HIGH,
                90,
                f"SIP scanner {matched!r} from {obs.src.ip} ({request.method} to {obs.dst.ip})",
                obs.src.ip,
                target=Target(obs.dst.ip, obs.dst.port, user),
                indicators=indicators,
                action=RecommendedAction("TEMP_BLOCK", 3600),
            )
        ]


# -- recon.scanner_fingerprint --------------------------------------------------------------------
#: Strong habits fire alone; weak ones need company (see ScannerFingerprintConfig).
_STRONG = "strong"
_WEAK = "weak"

#: SIPVicious (svhelper.makeRequest): ``branch=z9hG4bK-%s`` % random.getrandbits(32).
_SIPVICIOUS_BRANCH = re.compile(r"z9hG4bK-\d{1,10}\Z")
#: SIPVicious: Call-ID '%s' % random.getrandbits(80) (svmap) or (32) (svwar) - digits only.
_DECIMAL_CALL_ID = re.compile(r"\d{6,32}\Z")
#: SIPVicious createTag(): hex of ``<data> \x01 <random 32-bit decimal>``. At least 5 digits:
#: getrandbits(32) has fewer once in ~430,000 tags, and a random hex tag of a phone ends in
#: ``01`` + five hex-encoded digits about once in 10^10.
_HEX_PAIRS = re.compile(r"(?:[0-9a-fA-F]{2}){7,96}\Z")
_TAG_PAYLOAD = re.compile(rb"([\x20-\x7e]{1,64})\x01(\d{5,10})\Z")
#: sippts (lib/functions.create_message): branch = 71 random [0-9a-z], no z9hG4bK cookie;
#: Call-ID = 32 random hex digits.
_SIPPTS_BRANCH = re.compile(r"[0-9a-z]{71}\Z")
_HEX32_CALL_ID = re.compile(r"[0-9a-f]{32}\Z")
#: sippts' Via/Contact placeholder address (detection-anchors §4 item 6).
_SIPPTS_PLACEHOLDER = "10.0.0.1"
#: ET VOIP/SCAN content signatures (detection-anchors §2.2) that are not the User-Agent: the
#: From user of sipsak, smap and VoIPER, and the OPTIONS probe's From display name.
_FROM_USER_TOOLS = {"sipsak": ("sipsak", _STRONG), "smap": ("smap", _STRONG)}
_FROM_USER_WEAK_TOOLS = {"tester": "voiper"}
_DISPLAY_TOOLS = {"ccxllrlflgig": "ccxllrlflgig-probe"}
#: Methods that open a transaction outside a dialog (ACK/CANCEL/BYE & co follow one).
_INITIAL_METHODS = frozenset({"INVITE", "REGISTER", "OPTIONS", "SUBSCRIBE", "MESSAGE", "NOTIFY"})


class ScannerFingerprintConfig(DetectorConfig):
    weak_habits_needed: int = Field(
        3,
        ge=2,
        description=(
            "Weak habits of one tool (Via branch shape, Call-ID shape, To = From, Via sent-by "
            "that disagrees with the source, calibration user) needed in one request when no "
            "strong habit (SIPVicious tag encoding, sippts 71-character cookie-less branch, "
            "sippts SDP, sipsak/smap From user) is present. No published anchor: the ET "
            "VOIP/SCAN rules match one content string each; 3 independent weak habits keep "
            "a phone that happens to use numeric Call-IDs (one habit) or a numeric branch "
            "(another) below the line."
        ),
    )
    silent_when_user_agent_names_tool: bool = Field(
        True,
        description=(
            "Stay silent for a request whose User-Agent or From display name carries one of "
            "recon.scanner_user_agent's default signatures: that detector already reports the "
            "source with the tool's name, and two high findings per packet for one scanner "
            "(52 for the 26 OPTIONS of the LBNL capture) double the operator's work for no "
            "new fact. This detector is for tools that renamed themselves. Set false when "
            "recon.scanner_user_agent is disabled. No published anchor (a reporting choice)."
        ),
    )
    count_via_mismatch: bool = Field(
        True,
        description=(
            "Count a top Via sent-by that disagrees with the packet source as a weak habit - "
            "only a loopback address, or a public address other than the source on a "
            "single-Via request. A private sent-by behind a public source is ordinary NAT and "
            "never counts (detection-anchors §4 item 6 names the sippts/SIPVicious Via habits)."
        ),
    )


class _Habits:
    """What one request shows, per tool: (habit name, strength) and evidence strings."""

    __slots__ = ("evidence", "per_tool")

    def __init__(self) -> None:
        self.per_tool: dict[str, list[tuple[str, str]]] = {}
        self.evidence: dict[str, str] = {}

    def add(self, tool: str, habit: str, strength: str, evidence: str | None = None) -> None:
        self.per_tool.setdefault(tool, []).append((habit, strength))
        if evidence is not None:
            self.evidence[habit] = evidence[:_MAX_TEXT]


def _sipvicious_tag(tag: str | None) -> str | None:
    """The ``<data>`` SIPVicious' createTag() hex-encoded into a From tag, or None."""
    if not tag or not _HEX_PAIRS.match(tag):
        return None
    match = _TAG_PAYLOAD.match(bytes.fromhex(tag))
    return match.group(1).decode("ascii") if match else None


def _describe_svmap_payload(payload: str) -> str:
    """svmap puts the target's IPv4 address and port in its tag ('%02x'*4 + '%04x')."""
    if len(payload) == 12 and all(c in "0123456789abcdef" for c in payload):
        octets = [str(int(payload[i : i + 2], 16)) for i in range(0, 8, 2)]
        return f"{payload} (svmap target {'.'.join(octets)}:{int(payload[8:], 16)})"
    return payload


def _via_disagrees(vias: tuple[Via, ...], source: str) -> bool:
    """True when the top Via's sent-by is a loopback address, or - on a request with one Via,
    so not relayed by a proxy - a public address other than the packet source. A private
    sent-by behind a public source is NAT and never disagrees."""
    try:
        address = ipaddress.ip_address(vias[0].host.strip("[]"))
    except ValueError:
        return False  # a host name: nothing to compare without DNS
    if address.is_loopback:
        return not ipaddress.ip_address(source).is_loopback
    return len(vias) == 1 and address.is_global and str(address) != source


@register
class ScannerFingerprint(Detector):
    """A request carrying the message-construction habits of a known SIP scanner, whatever its
    User-Agent says.

    Signal: habits read from the tools' sources. SIPVicious (``svhelper.makeRequest``,
    ``createTag``): From tag = hex of ``<data>\\x01<32-bit decimal>`` where ``<data>`` is the
    target ip:port (svmap) or the probed user (svwar) [strong]; branch ``z9hG4bK-<decimal>``,
    digits-only Call-ID, To identical to From, svwar's first request to a random 32-bit user
    whose tag encodes that same user (the calibration probe) [weak]. sippts
    (``lib/functions.create_message``): 71-character ``[0-9a-z]`` branch without the
    ``z9hG4bK`` cookie and ``s=SIPPTS`` in the SDP [strong]; 32-hex-digit Call-ID, Via
    ``10.0.0.1`` placeholder [weak]. sipsak/smap From user [strong], VoIPER ``tester`` [weak]
    (ET content signatures). Any tool: a Via sent-by on loopback, or public and not the
    packet source [weak]. Fires on a strong habit, or on ``weak_habits_needed`` weak ones of
    one tool. Why: attackers rename the User-Agent (EnableSecurity/sipvicious#84) but rarely
    rewrite how the tool builds messages (detection-anchors §4 item 6). Defaults' anchor: the
    tools' sources; ET VOIP/SCAN content signatures; no published threshold for combining.
    Silent, by default, for a request whose User-Agent or From display name already names a
    scanner (``silent_when_user_agent_names_tool``): recon.scanner_user_agent reports those.
    Known false positives: a home-made test script that copies SIPVicious' helpers; a phone
    with digits-only Call-IDs, a numeric dash branch and To = From (three weak habits).
    """

    id: ClassVar[str] = "recon.scanner_fingerprint"
    threat: ClassVar[Threat] = Threat.RECON
    Config: ClassVar[type[DetectorConfig]] = ScannerFingerprintConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, ScannerFingerprintConfig)
        self._weak_needed = self.config.weak_habits_needed
        self._via_mismatch = self.config.count_via_mismatch
        self._defer_to_user_agent = self.config.silent_when_user_agent_names_tool

    def observe(self, obs: Observation) -> list[Finding]:
        request = obs.request
        if request is None or self.allowed(obs.src.ip):
            return []
        if self._defer_to_user_agent and _scanner_signature(request, _DEFAULT_SIGNATURES):
            return []  # recon.scanner_user_agent reports this one
        try:
            habits = self._habits(obs, request)
        except SipParseError:
            return []
        verdict = self._verdict(habits)
        if verdict is None:
            return []
        tool, names, strong = verdict
        try:
            user = request.request_uri.user
        except SipParseError:
            user = None
        indicators = {"tool": tool, "habits": ",".join(names), **habits.evidence}
        user_agent = request.headers.get("user-agent") or ""
        if user_agent:
            indicators["user_agent"] = user_agent[:_MAX_TEXT]
        weak = len(names) - strong
        high = (strong and weak) or weak >= self._weak_needed + 1
        return [
            self.hit(
                obs,
                Severity.HIGH if high else Severity.MEDIUM,
                95 if strong and weak else 80 if strong else 70,
                f"{tool} message habits from {obs.src.ip} ({request.method} to {obs.dst.ip}; "
                f"{', '.join(names)})",
                f"{obs.src.ip}|{tool}",
                target=Target(obs.dst.ip, obs.dst.port, (user or "")[:_MAX_TEXT] or None),
                indicators=indicators,
                action=RecommendedAction("TEMP_BLOCK", 3600),
            )
        ]

    def _verdict(self, habits: _Habits) -> tuple[str, list[str], int] | None:
        """The tool with the most convincing habits: (tool, habit names, strong count)."""
        best: tuple[int, int, str, list[str]] | None = None
        generic = habits.per_tool.get("", [])
        for tool, found in habits.per_tool.items():
            if not tool:
                continue
            items = found + generic
            strong = sum(1 for _, s in items if s == _STRONG)
            weak = len(items) - strong
            if not strong and weak < self._weak_needed:
                continue
            rank = (strong, weak, tool, [name for name, _ in items])
            if best is None or rank[:2] > best[:2]:
                best = rank
        return None if best is None else (best[2], best[3], best[0])

    def _habits(self, obs: Observation, request: Request) -> _Habits:
        habits = _Habits()
        sender = request.from_
        receiver = request.to
        vias = request.via
        top = vias[0] if vias else None
        branch = (top.branch or "") if top is not None else ""
        call_id = request.call_id or ""
        method = request.method

        payload = _sipvicious_tag(sender.tag if sender is not None else None)
        if payload is not None:
            habits.add("sipvicious", "sipvicious_tag", _STRONG, _describe_svmap_payload(payload))
        if _SIPVICIOUS_BRANCH.match(branch):
            habits.add("sipvicious", "sipvicious_branch", _WEAK, branch)
        if _DECIMAL_CALL_ID.match(call_id):
            habits.add("sipvicious", "decimal_call_id", _WEAK, call_id)
        if (
            method != "REGISTER"  # a REGISTER's To is its From by design (RFC 3261 §10.2)
            and sender is not None
            and receiver is not None
            and sender.uri_text == receiver.uri_text
            and sender.display_name == receiver.display_name
        ):
            habits.add("sipvicious", "to_equals_from", _WEAK, receiver.uri_text)
        target_user = self._target_user(request, receiver)
        if (
            payload is not None
            and target_user == payload
            and payload.isdigit()
            and len(payload) >= 7
            and int(payload) < 2**32
        ):
            habits.add("sipvicious", "calibration_probe", _WEAK, payload)

        if _SIPPTS_BRANCH.match(branch):
            habits.add("sippts", "sippts_branch", _STRONG, branch)
        if _HEX32_CALL_ID.match(call_id):
            habits.add("sippts", "hex32_call_id", _WEAK, call_id)
        if top is not None and top.host == _SIPPTS_PLACEHOLDER and obs.src.ip != top.host:
            habits.add("sippts", "via_placeholder", _WEAK, top.sent_by)
        if b"s=SIPPTS" in request.body:
            habits.add("sippts", "sippts_sdp", _STRONG, "s=SIPPTS")

        if sender is not None:
            try:
                from_user = (sender.uri.user or "").lower()
            except ValueError:
                from_user = ""
            if from_user in _FROM_USER_TOOLS:
                tool, strength = _FROM_USER_TOOLS[from_user]
                habits.add(tool, f"from_user_{from_user}", strength, sender.uri_text)
            if from_user in _FROM_USER_WEAK_TOOLS:
                habits.add(_FROM_USER_WEAK_TOOLS[from_user], "from_user_tester", _WEAK)
            display = (sender.display_name or "").lower()
            for needle, tool in _DISPLAY_TOOLS.items():
                if needle in display:
                    habits.add(tool, "probe_display_name", _STRONG, display)

        if self._via_mismatch and top is not None and _via_disagrees(vias, obs.src.ip):
            habits.add("", "via_sent_by_mismatch", _WEAK, f"{top.sent_by} from {obs.src.ip}")
        return habits

    @staticmethod
    def _target_user(request: Request, receiver: NameAddr | None) -> str | None:
        try:
            user = request.request_uri.user
            if user is None and receiver is not None:
                user = receiver.uri.user
        except (SipParseError, ValueError):
            return None
        return user


# -- shared by host sweep and enumeration ---------------------------------------------------------
#: A source that answered requests of this many distinct clients within SERVER_MEMORY_S is
#: itself a SIP server (a PBX, registrar or SBC); scanners answer nobody.
_SERVER_CLIENTS = 3
_SERVER_MEMORY_S = 3600.0


class _Peers:
    """Who talks to whom first, and who serves SIP.

    ``(a, "ip:port")`` in ``table`` means that endpoint sent a request to address a. A registrar
    qualifying its phones with OPTIONS, or a PBX delivering calls to the trunk it registered
    with, sends to an endpoint (ip and port, so each phone behind one NAT is its own peer) that
    talked to it first; a scanner talks to strangers. detection-anchors §3: a FreePBX sending
    OPTIONS to 2000 extensions got pike-banned. A capture that starts after the phones
    registered misses that first request, so ``serves`` also tells whether a source answers
    other clients' requests: infrastructure does, a scanner does not.
    """

    def __init__(self, max_entries: int) -> None:
        self.table: LruSet[tuple[str, str]] = LruSet(max_entries)
        self.clients: DistinctCounter[str, str] = DistinctCounter(
            max_entries, _SERVER_MEMORY_S, _SERVER_CLIENTS
        )

    def learn(self, obs: Observation) -> None:
        if obs.request is not None:
            self.table.add((obs.dst.ip, f"{obs.src.ip}:{obs.src.port}"))
        elif obs.response is not None:
            self.clients.add(obs.src.ip, obs.dst.ip, obs.ts)

    def known(self, client: str, server: Endpoint) -> bool:
        """True when ``server`` (ip and port) has sent a request to ``client`` before."""
        return (client, f"{server.ip}:{server.port}") in self.table

    def serves(self, ip: str, now: float) -> bool:
        """True when ``ip`` recently answered requests of several distinct clients."""
        return self.clients.count(ip, now) >= _SERVER_CLIENTS


def _infrastructure_grade(
    severity: Severity, confidence: int, action: RecommendedAction, why: str, serves: bool
) -> tuple[Severity, int, RecommendedAction, str]:
    """A recon pattern from a source that serves SIP itself is most likely a PBX or SBC at work
    (qualifying phones, routing calls): still reported, as low, for the operator to confirm."""
    if not serves:
        return severity, confidence, action, why
    return (
        Severity.LOW,
        min(confidence, 40),
        RecommendedAction("MONITOR"),
        f"{why}; the source answers other clients' requests: a PBX or SBC at work?",
    )


class _Crossings:
    """First hit of a key when its window count reaches the threshold (carrying that count),
    then one hit per further counted event while the key stays over it (count 1 each), so the
    engine's episode adds up to the events of the episode."""

    def __init__(self, max_entries: int, window_s: float) -> None:
        self.table: TtlMap[str, bool] = TtlMap(max_entries, window_s)

    def count(self, key: str, window_count: int, now: float) -> int:
        if self.table.get(key, now) is None:
            self.table.set(key, True, now)
            return window_count
        self.table.touch(key, now)
        return 1


def _dialog_initial(request: Request) -> bool:
    if request.method not in _INITIAL_METHODS:
        return False
    try:
        receiver = request.to
    except SipParseError:
        return False
    return receiver is None or not receiver.tag


class _ScanConfig(DetectorConfig):
    """What the two scan detectors share: per-source state, and who talked first (``_Peers``)."""

    max_sources: int = Field(
        100_000,
        ge=1,
        description="Most sources tracked at once; the least recently active is evicted first.",
    )
    max_peers: int = Field(
        200_000,
        ge=1,
        description=(
            "Most (address, peer) pairs remembered to recognise hosts that talked first (phones "
            "a registrar qualifies), and most servers whose clients are counted; least "
            "recently seen evicted first."
        ),
    )


class HostSweepConfig(_ScanConfig):
    window_s: float = Field(
        300.0,
        gt=0,
        description=(
            "Sliding window, seconds. No published SIP anchor (detection-anchors §1a: host "
            "sweep is N/P everywhere), so borrowed from Zeek's generic TCP scan policy "
            "(policy/misc/scan.zeek, Scan::addr_scan_interval = 5min; not in the anchors file)."
        ),
    )
    hosts_per_window: int = Field(
        25,
        ge=2,
        description=(
            "Distinct destination IPs one source sends dialog-initial requests to within one "
            "window. No published SIP anchor; as Zeek's generic Scan::addr_scan_threshold = 25 "
            "(policy/misc/scan.zeek, not in the anchors file)."
        ),
    )


@register
class HostSweep(Detector):
    """One source sending dialog-initial SIP requests to many distinct hosts.

    Signal: distinct destination IPs of INVITE/REGISTER/OPTIONS/SUBSCRIBE/MESSAGE/NOTIFY without
    a To tag, per source IP, in a sliding window; a destination that has itself sent a request
    to the source before (a phone its registrar qualifies, a trunk the PBX registered with) is
    not counted. Why: svmap and sippts scan address ranges for SIP servers before enumerating
    them. Defaults' anchor: Zeek scan.zeek (25 hosts / 5 min), as no SIP system publishes one.
    Known false positives: an outbound proxy or SBC fanning calls out to many carriers or
    PBXs that never send it requests; a monitoring probe (allow-list it).
    """

    id: ClassVar[str] = "recon.host_sweep"
    threat: ClassVar[Threat] = Threat.RECON
    Config: ClassVar[type[DetectorConfig]] = HostSweepConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, HostSweepConfig)
        cfg = self.config
        self._threshold = cfg.hosts_per_window
        self._hosts: DistinctCounter[str, str] = DistinctCounter(
            cfg.max_sources, cfg.window_s, cfg.hosts_per_window
        )
        self._peers = _Peers(cfg.max_peers)
        self._open = _Crossings(cfg.max_sources, cfg.window_s)

    def observe(self, obs: Observation) -> list[Finding]:
        self._peers.learn(obs)
        request = obs.request
        if request is None:
            return []
        if self.allowed(obs.src.ip) or not _dialog_initial(request):
            return []
        if self._peers.known(obs.src.ip, obs.dst):
            return []
        hosts = self._hosts.add(obs.src.ip, obs.dst.ip, obs.ts)
        if hosts < self._threshold:
            return []
        try:
            call_id = request.call_id
        except SipParseError:
            call_id = None
        severity, confidence, action, why = _infrastructure_grade(
            Severity.HIGH,
            80,
            RecommendedAction("TEMP_BLOCK", 3600),
            f"{request.method} to ≥{self._threshold} hosts within {self._hosts.window_s:g} s",
            self._peers.serves(obs.src.ip, obs.ts),
        )
        return [
            Finding(
                self.id,
                self.threat,
                severity,
                confidence,
                f"SIP host sweep from {obs.src.ip}: {why}",
                obs.src.ip,
                obs.ts,
                obs.ts,
                count=self._open.count(obs.src.ip, hosts, obs.ts),
                source=obs.src,
                target=Target(obs.dst.ip, obs.dst.port),
                indicators={"distinct_hosts_at_least": str(hosts), "method": request.method},
                evidence=Evidence().add(obs.frame or None, (call_id or "")[:_MAX_TEXT] or None),
                recommended_action=action,
            )
        ]

    def advance(self, now: float) -> list[Finding]:
        self._hosts.expire(now)
        self._open.table.expire(now)
        self._peers.clients.expire(now)  # bounded anyway; pruned when other windows close
        return []

    def next_deadline(self) -> float | None:
        deadlines = [
            d for d in (self._hosts.next_expiry(), self._open.table.next_expiry()) if d is not None
        ]
        return min(deadlines) if deadlines else None

    def stats(self) -> TableStats:
        return TableStats.total(
            [self._hosts, self._peers.table, self._peers.clients, self._open.table]
        )

    def state_size(self) -> int:
        return self.stats().entries

    def evictions(self) -> int:
        return self.stats().evictions


# -- recon.extension_enumeration ------------------------------------------------------------------
_ENUM_METHODS = frozenset({"REGISTER", "INVITE", "OPTIONS", "SUBSCRIBE", "MESSAGE"})


#: Answers from a user who exists but did not take the call: busy, unavailable, cancelled,
#: declined (RFC 3261 §21.4.18, §21.4.25, §21.4.27, §21.6).
_UNAVAILABLE = frozenset({480, 486, 487, 600, 603})


def _response_class(status: int | None) -> str:
    if status is None:
        return "none"
    if status in (401, 407):
        return "challenge"
    if status in (403, 404):
        return str(status)
    if status in _UNAVAILABLE:
        return "unavailable"
    return f"{status // 100}xx"


def _logged_in(tx: Transaction) -> bool:
    """A REGISTER or INVITE with credentials that got a 2xx: a login that worked."""
    ok = tx.status is not None and 200 <= tx.status < 300
    return ok and tx.credentials_user is not None and tx.method in ("REGISTER", "INVITE")


class _Mix:
    """Final answers one source got since it became active (forgotten after a quiet window),
    by class."""

    __slots__ = ("classes",)

    def __init__(self) -> None:
        self.classes: dict[str, int] = {}

    def add(self, tx: Transaction) -> None:
        name = _response_class(tx.status)
        self.classes[name] = self.classes.get(name, 0) + 1

    def text(self) -> str:
        ordered = sorted(self.classes.items(), key=lambda kv: (-kv[1], kv[0]))
        return ", ".join(f"{name}×{n}" for name, n in ordered)

    def mostly_successful(self) -> bool:
        """True when half or more of the answers (unanswered included) reached a user: 2xx,
        or busy/unavailable/cancelled/declined. Faster failures arrive first, so the answered
        calls of a trunk alone would be under half when the count crosses."""
        total = sum(self.classes.values())
        reached = self.classes.get("2xx", 0) + self.classes.get("unavailable", 0)
        return total > 0 and reached * 2 >= total

    def differs(self) -> bool:
        """True when answers of more than one kind came: the server leaks which users exist."""
        return len([name for name in self.classes if name != "none"]) > 1


class ExtensionEnumerationConfig(_ScanConfig):
    window_s: float = Field(
        120.0,
        gt=0,
        description=(
            "Sliding window, seconds. Default 2 min as Elastic's SIP extension-enumeration "
            "rule (elastic/detection-rules discovery_potential_sip_extension_enumeration)."
        ),
    )
    users_per_window: int = Field(
        20,
        ge=2,
        description=(
            "Distinct (server IP, user) targets one source probes within one window: "
            "REGISTER To user, else Request-URI user, of REGISTER/INVITE/OPTIONS/SUBSCRIBE/"
            "MESSAGE transactions with a final answer or none. Default as Elastic (≥20 "
            "distinct users / 2 min; Elastic counts OPTIONS only, CrowdSec's "
            "asterisk_user_enum any method). Counted whatever the answers, so a server that "
            "challenges everyone (Asterisk PJSIP's artificial 401) is covered too."
        ),
    )


@register
class ExtensionEnumeration(Detector):
    """One source probing many distinct users, read from the answers it got.

    Signal: distinct (server IP, user) targets of final transactions per source IP in a sliding
    window (the tracker's ``on_transaction``), with the mix of answers (404/403/401/2xx/none)
    kept as evidence. Answers of several kinds mean the server tells which users exist
    (confidence 90); one kind only - a server that challenges everyone - leaves the count of
    distinct users to speak (confidence 75). Targets on servers that sent the source requests
    first are not counted: a PBX's OPTIONS keepalives to the phones registered with it
    (detection-anchors §3, FreePBX with 2000 extensions pike-banned) and calls a PBX delivers
    to its registered trunk. When at least half the distinct users probed in the window logged
    in successfully (2xx to a REGISTER or INVITE with credentials) the source looks like a proxy
    fronting many phones and the finding is low (one account of its own does not make an
    enumerator look like a proxy); so it is when half or more of all answers reached a user
    (2xx, busy, unavailable, cancelled, declined: a trunk
    delivering calls: probing collects failures), or when the source itself answers other
    clients' requests (a PBX or SBC: scanners answer nobody). Requests inside a dialog (To
    tag: re-INVITEs, in-dialog MESSAGE/SUBSCRIBE) are not probes. Defaults' anchor: Elastic
    (≥20 distinct users / 2 min). Known false positives: an SBC or carrier trunk sending
    unauthenticated calls to many numbers of a PBX it never registered with, most of them
    failing; a provisioning tool that tests accounts (allow-list them).
    """

    id: ClassVar[str] = "recon.extension_enumeration"
    threat: ClassVar[Threat] = Threat.RECON
    Config: ClassVar[type[DetectorConfig]] = ExtensionEnumerationConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, ExtensionEnumerationConfig)
        cfg = self.config
        self._threshold = cfg.users_per_window
        self._users: DistinctCounter[str, str] = DistinctCounter(
            cfg.max_sources, cfg.window_s, cfg.users_per_window
        )
        # Distinct targets whose login worked, per source, in the same window as _users: a
        # proxy fronting phones logs most of them in; an enumerator owning one account does
        # not get past one.
        self._logins: DistinctCounter[str, str] = DistinctCounter(
            cfg.max_sources, cfg.window_s, cfg.users_per_window
        )
        self._mix: TtlMap[str, _Mix] = TtlMap(cfg.max_sources, cfg.window_s)
        self._peers = _Peers(cfg.max_peers)
        self._open = _Crossings(cfg.max_sources, cfg.window_s)

    def observe(self, obs: Observation) -> list[Finding]:
        self._peers.learn(obs)
        return []

    def on_transaction(self, tx: Transaction) -> list[Finding]:
        if not tx.final or tx.method not in _ENUM_METHODS or tx.in_dialog:
            # In a dialog (a re-INVITE, in-dialog MESSAGE) the Request-URI is a Contact.
            return []
        client = tx.client.ip
        if self.allowed(client) or self._peers.known(client, tx.server):
            return []
        user = tx.to_user if tx.method == "REGISTER" else tx.request_uri_user or tx.to_user
        if not user:
            return []
        now = tx.request_ts
        target = f"{tx.server.ip}|{user}"[:_MAX_TEXT]
        users = self._users.add(client, target, now)
        logins = (
            self._logins.add(client, target, now)
            if _logged_in(tx)
            else self._logins.count(client, now)
        )
        mix = self._mix.get(client, now)
        if mix is None:
            mix = _Mix()
        mix.add(tx)
        self._mix.set(client, mix, now)
        if users < self._threshold:
            return []
        proxy_like = logins * 2 >= users
        differs = mix.differs()
        if proxy_like:
            severity, confidence = Severity.LOW, 40
            action = RecommendedAction("MONITOR")
            why = "most logins succeed: a proxy fronting phones?"
        elif mix.mostly_successful():
            # Probing collects failures (404, 403, challenges, silence); a trunk delivering
            # calls (or a monitor whose pings are answered) reaches users. Half or more
            # reaching a user is traffic, not a probe.
            severity, confidence = Severity.LOW, 40
            action = RecommendedAction("MONITOR")
            why = "most requests reached a user: a trunk delivering calls?"
        else:
            severity, confidence = Severity.HIGH, 90 if differs else 75
            action = RecommendedAction("TEMP_BLOCK", 3600)
            why = "answers differ by user" if differs else "every user answered alike"
        severity, confidence, action, why = _infrastructure_grade(
            severity, confidence, action, why, self._peers.serves(client, now)
        )
        frame = tx.response_frame or tx.request_frame
        return [
            Finding(
                self.id,
                self.threat,
                severity,
                confidence,
                f"Extension enumeration from {client}: ≥{self._threshold} users probed within "
                f"{self._users.window_s:g} s ({tx.method} to {tx.server.ip}; {why})",
                client,
                now,
                now,
                count=self._open.count(client, users, now),
                source=tx.client,
                target=Target(tx.server.ip, tx.server.port, user),
                indicators={
                    "distinct_users_at_least": str(users),
                    "responses": mix.text(),
                    "response_difference": "yes" if differs else "no",
                    "last_user": user,
                    "method": tx.method,
                },
                evidence=Evidence().add(frame or None, tx.call_id or None),
                recommended_action=action,
            )
        ]

    def advance(self, now: float) -> list[Finding]:
        self._users.expire(now)
        self._logins.expire(now)
        self._mix.expire(now)
        self._open.table.expire(now)
        self._peers.clients.expire(now)  # bounded anyway; pruned when other windows close
        return []

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for d in (
                self._users.next_expiry(),
                self._logins.next_expiry(),
                self._mix.next_expiry(),
                self._open.table.next_expiry(),
            )
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    def stats(self) -> TableStats:
        return TableStats.total(
            [
                self._users,
                self._logins,
                self._mix,
                self._peers.table,
                self._peers.clients,
                self._open.table,
            ]
        )

    def state_size(self) -> int:
        return self.stats().entries

    def evictions(self) -> int:
        return self.stats().evictions
