"""FS.38 event messages, schema 1.0 (conventions.md §4), derived from findings. Pure: findings
in, JSON-ready dicts out.

Mapping (event types from exchange-stir-diameter.md §A.2):

=====================  ===========================================================
threat                 event_type
=====================  ===========================================================
tdos                   TDOS when the detector judges calls (``invite``/``call`` in its
                       name: a call flood on a number), else SIP_FLOOD (signalling)
recon                  EXTENSION_ENUMERATION for ``*enumeration*`` detectors, else SIP_SCAN
credential             REGISTRATION_BRUTE_FORCE
unauthorized           TOLL_FRAUD (billable service used without authentication)
toll_fraud             PREMIUM_RATE_FRAUD when an indicator says premium rate, IRSF when it
                       names an E.164 number or prefix (both types require one), else
                       TOLL_FRAUD
wangiri                WANGIRI (the calling number as a ``tel`` indicator); ROBOCALL when
                       the calling number is not E.164 (WANGIRI requires a number)
spoofing               STIR_SHAKEN_FAILURE for ``*stir*``/``*shaken*`` detectors, else
                       CLI_SPOOFING
identity_takeover      SIM_SWAP (with ``msisdn``/``imsi`` from the finding's indicators),
                       REGISTRATION_HIJACK when neither is present
malformed, injection   MALFORMED_SIP
disclosure             no event: our own topology leaking is a local fix, not intelligence
                       for peers
=====================  ===========================================================

Subscriber data is minimised: ``msisdn``/``imsi`` appear only in SIM_SWAP events, and telephone
numbers appear as indicators only for number-fraud events (IRSF, premium rate, wangiri, toll
fraud), where the number *is* the intelligence. Call-IDs, summaries and the target of a TDoS
(a victim's number) are never copied into events.

One event per subject per episode: findings that give the same event type about the same
subject (the source or target address, else the subscriber, else the numbers) and whose sightings
are at most ``merge_gap_s`` apart become one event - e.g. ``recon.scanner_user_agent`` and
``recon.scanner_fingerprint`` on one scanner give one SIP_SCAN, not two. The event spans all of
them: earliest first sight, latest last sight, the highest confidence and severity, the union of
indicators and log refs, the strongest recommended action; ``detection_method`` joins the
detector ids with ``+`` (the schema allows it) when they fit its 64 characters, and the evidence
``summary`` names them all; ``observations`` adds a detector's episodes but takes the largest
across detectors (they count the same packets).

The message is deterministic: ``message_id`` derives from the (first) finding id and
``timestamp_utc`` is the last packet time rounded up to the second (receivers check
``last_seen_utc <= timestamp_utc``, §A.1), so re-running a capture gives byte-identical events.
(A live exchange client that pushes them re-stamps ``timestamp_utc`` at send time: peers reject
pushes older than their replay window, exchange-stir-diameter.md §A.4 R4.) A finding that names
no subject a peer could match (no address, subscriber or number) gives no event: the schema
requires one.

Actions are made schema-valid: a time-bounded action without a TTL gets
:data:`DEFAULT_ACTION_TTL_S`, TTLs are clamped to 60 s-30 d, and a RATE_LIMIT whose finding does
not say which rate was too much becomes MONITOR rather than carrying an invented limit.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sipwarden.detect.finding import Finding, RecommendedAction
from sipwarden.detect.taxonomy import Severity, Threat

__all__ = [
    "DEFAULT_ACTION_TTL_S",
    "DEFAULT_MERGE_GAP_S",
    "event_type",
    "events_from_findings",
    "finding_event",
]

#: TTL given to time-bounded actions (MONITOR, TEMP_BLOCK, ...) that a detector left without
#: one; the schema requires it. 3600 s as the FS.38 example message (conventions.md §4).
DEFAULT_ACTION_TTL_S = 3600

#: Findings about one subject whose sightings are at most this far apart share one event. 300 s,
#: the engine's default ``episode_gap_s`` (one episode per detector); the CLI passes the
#: configured value.
DEFAULT_MERGE_GAP_S = 300.0

_TTL_MIN_S, _TTL_MAX_S = 60, 2_592_000  # schema 1.0 bounds on suggested_ttl_seconds
_NEEDS_TTL = {"MONITOR", "CHALLENGE", "RATE_LIMIT", "RESTRICT_SERVICE", "TEMP_BLOCK"}
#: Weakest to strongest (exchange-stir-diameter.md §A.2 action table): a merged event carries the
#: strongest of its findings' actions.
_ACTION_ORDER = (
    "NONE",
    "MONITOR",
    "INVESTIGATE",
    "CHALLENGE",
    "RATE_LIMIT",
    "RESTRICT_SERVICE",
    "TEMP_BLOCK",
    "BLOCK",
)
_ACTIONS = set(_ACTION_ORDER)
_DETECTION_METHOD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{1,63}$")
_SEVERITY_RANK = {s.value: s.rank for s in Severity}
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_E164_PREFIX = re.compile(r"^\+[1-9][0-9]{0,13}$")
_IMSI = re.compile(r"^[0-9]{14,15}$")
_LOG_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_USER_AGENT = re.compile(r"^[ -~]{1,256}$")
#: Network-attack types the schema requires an address indicator for (§A.1 allOf).
_ADDRESS_EVENTS = {
    "SIP_SCAN",
    "EXTENSION_ENUMERATION",
    "REGISTRATION_BRUTE_FORCE",
    "TDOS",
    "SIP_FLOOD",
}
_NUMBER_EVENTS = {"IRSF", "PREMIUM_RATE_FRAUD", "WANGIRI", "TOLL_FRAUD", "TRAFFIC_PUMPING"}
_CALLER_KEYS = {"caller", "calling_number", "from_user", "asserted_identity"}
_MAX_LOG_REFS = 50
_MAX_INDICATORS = 100


def event_type(finding: Finding) -> str | None:
    """The FS.38 event type for a finding (module docstring), or None for no event."""
    name = finding.detector.partition(".")[2]
    match finding.threat:
        case Threat.TDOS:
            return "TDOS" if "invite" in name or "call" in name else "SIP_FLOOD"
        case Threat.RECON:
            return "EXTENSION_ENUMERATION" if "enumeration" in name else "SIP_SCAN"
        case Threat.CREDENTIAL:
            return "REGISTRATION_BRUTE_FORCE"
        case Threat.UNAUTHORIZED:
            return "TOLL_FRAUD"
        case Threat.TOLL_FRAUD:
            values = " ".join(finding.indicators.values()).lower()
            if "premium" in values and _numbers(finding):
                return "PREMIUM_RATE_FRAUD"
            return "IRSF" if _numbers(finding) else "TOLL_FRAUD"
        case Threat.WANGIRI:
            return "WANGIRI" if _numbers(finding) else "ROBOCALL"
        case Threat.SPOOFING:
            return "STIR_SHAKEN_FAILURE" if "stir" in name or "shaken" in name else "CLI_SPOOFING"
        case Threat.IDENTITY_TAKEOVER:
            return "SIM_SWAP" if _subscriber(finding) else "REGISTRATION_HIJACK"
        case Threat.MALFORMED | Threat.INJECTION:
            return "MALFORMED_SIP"
        case Threat.DISCLOSURE:
            return None
    return None  # pragma: no cover - every Threat is matched above


def finding_event(finding: Finding, sender_id: str) -> dict[str, Any] | None:
    """The FS.38 schema-1.0 message for one finding, or None when its family has no event."""
    kind = event_type(finding)
    if kind is None:
        return None
    event: dict[str, Any] = {"event_type": kind}
    if kind == "SIM_SWAP":
        event.update(_subscriber(finding))
    event["confidence_score"] = finding.confidence
    if finding.severity is not Severity.INFO:  # the schema has no "info"
        event["severity"] = finding.severity.value
    event["first_seen_utc"] = _utc(finding.first_seen)
    event["last_seen_utc"] = _utc(finding.last_seen)
    indicators = _indicators(finding, kind)
    if not _has_subject(kind, event, indicators):
        return None  # nothing a peer could match; the schema requires a subject
    if indicators:
        event["indicators"] = indicators
    event["evidence"] = {
        "detection_method": finding.detector,
        "log_refs": _log_refs(finding),
        "detector_id": finding.detector,
        "observations": max(1, finding.count),
    }
    return {
        "message_id": _message_id(finding),
        "timestamp_utc": _utc(math.ceil(finding.last_seen), fraction=False),
        "schema_version": "1.0",
        "sender_id": sender_id,
        "event": event,
        "recommended_action": _action(finding),
    }


def _has_subject(kind: str, event: dict[str, Any], indicators: list[dict[str, str]]) -> bool:
    """Whether the event names what the schema requires: an address for network attacks,
    else any indicator or a subscriber (number-fraud types are chosen only with a number)."""
    if kind in _ADDRESS_EVENTS:
        return any(i["type"] in ("ipv4", "ipv6", "cidr") for i in indicators)
    return bool(indicators) or "msisdn" in event or "imsi" in event


def events_from_findings(
    findings: Iterable[Finding],
    sender_id: str,
    min_severity: Severity = Severity.MEDIUM,
    merge_gap_s: float = DEFAULT_MERGE_GAP_S,
) -> list[dict[str, Any]]:
    """Events for the findings at or above ``min_severity``, one per subject per episode
    (module docstring), in the order of each episode's first finding."""
    episodes: list[list[tuple[Finding, dict[str, Any]]]] = []
    #: subject -> (its latest episode, that episode's last sight)
    latest: dict[tuple[Any, ...], tuple[list[tuple[Finding, dict[str, Any]]], float]] = {}
    selected = [f for f in findings if f.severity.rank >= min_severity.rank]
    for finding in sorted(selected, key=lambda f: f.first_seen):
        event = finding_event(finding, sender_id)
        if event is None:
            continue
        subject = _subject(event["event"])
        episode, last_seen = latest.get(subject, (None, 0.0))
        if episode is None or finding.first_seen - last_seen > merge_gap_s:
            episode, last_seen = [], finding.last_seen
            episodes.append(episode)
        episode.append((finding, event))
        latest[subject] = (episode, max(last_seen, finding.last_seen))
    return [_merged(episode) for episode in episodes]


def _subject(event: dict[str, Any]) -> tuple[Any, ...]:
    """What an event is about: its type and addresses, else its subscriber, else its other
    indicators (numbers). User agents are not a subject - one scanner changes them."""
    indicators = event.get("indicators", [])
    addresses = tuple(
        (i["value"], i["role"]) for i in indicators if i["type"] in ("ipv4", "ipv6", "cidr")
    )
    if addresses:
        return (event["event_type"], addresses)
    if "msisdn" in event or "imsi" in event:
        return (event["event_type"], event.get("msisdn"), event.get("imsi"))
    return (
        event["event_type"],
        tuple((i["type"], i["value"]) for i in indicators if i["type"] != "user_agent"),
    )


def _merged(episode: Sequence[tuple[Finding, dict[str, Any]]]) -> dict[str, Any]:
    """One message for findings about one subject (module docstring); a single finding's
    message unchanged."""
    first = dict(episode[0][1])
    if len(episode) == 1:
        return first
    findings = [f for f, _ in episode]
    bodies = [e["event"] for _, e in episode]
    event = dict(first["event"])
    event["confidence_score"] = max(b["confidence_score"] for b in bodies)
    severities = [b["severity"] for b in bodies if "severity" in b]
    if severities:
        event["severity"] = max(severities, key=_SEVERITY_RANK.__getitem__)
    event["first_seen_utc"] = _utc(min(f.first_seen for f in findings))
    last_seen = max(f.last_seen for f in findings)
    event["last_seen_utc"] = _utc(last_seen)
    # Linear in the episode's size: one source can give thousands of findings.
    unique = {tuple(sorted(i.items())): i for body in bodies for i in body.get("indicators", [])}
    if unique:
        event["indicators"] = list(unique.values())[:_MAX_INDICATORS]
    per_detector: Counter[str] = Counter()
    for f in findings:
        per_detector[f.detector] += max(1, f.count)
    detectors = list(per_detector)
    joined = "+".join(detectors)
    refs = [f.id for f in findings] + [r for b in bodies for r in b["evidence"]["log_refs"]]
    event["evidence"] = {
        "detection_method": joined if _DETECTION_METHOD.match(joined) else detectors[0],
        "log_refs": [r for r in dict.fromkeys(refs) if _LOG_REF.match(r)][:_MAX_LOG_REFS],
        "detector_id": first["event"]["evidence"]["detector_id"],
        "observations": max(per_detector.values()),
    }
    if len(detectors) > 1:
        # detection_method holds 64 characters; the summary names every detector (our ids only,
        # no wire data).
        event["evidence"]["summary"] = (f"{len(findings)} findings by " + ", ".join(detectors))[
            :1000
        ]
    first["event"] = event
    first["timestamp_utc"] = _utc(math.ceil(last_seen), fraction=False)
    first["recommended_action"] = max(
        (e["recommended_action"] for _, e in episode),
        key=lambda a: (_ACTION_ORDER.index(a["action_code"]), a.get("suggested_ttl_seconds", 0)),
    )
    return first


# -- parts ---------------------------------------------------------------------------------------
def _utc(ts: float, *, fraction: bool = True) -> str:
    moment = datetime.fromtimestamp(ts, tz=UTC)
    spec = "milliseconds" if fraction else "seconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _message_id(finding: Finding) -> str:
    # "fs38-YYYYMMDD-<finding hash>": the date reads like the FS.38 example, the hash makes it
    # unique per finding and stable across runs.
    day = datetime.fromtimestamp(finding.first_seen, tz=UTC).strftime("%Y%m%d")
    return f"fs38-{day}-{finding.id.removeprefix('f-')}"


def _log_refs(finding: Finding) -> list[str]:
    refs = [finding.id]
    refs += [f"frame:{n}" for n in finding.evidence.frames]
    return [r for r in refs if _LOG_REF.match(r)][:_MAX_LOG_REFS]


def _subscriber(finding: Finding) -> dict[str, str]:
    found: dict[str, str] = {}
    msisdn = _as_e164(finding.indicators.get("msisdn", ""))
    if msisdn:
        found["msisdn"] = msisdn
    imsi = finding.indicators.get("imsi", "")
    if _IMSI.match(imsi):
        found["imsi"] = imsi
    return found


def _as_e164(value: str) -> str | None:
    value = value.strip()
    if value.startswith("tel:"):
        value = value[4:].split(";", 1)[0]
    if not value.startswith("+") and value.isdigit():
        value = "+" + value  # IMS MSISDNs are often written without '+' (TS 23.003 §3.3)
    return value if _E164.match(value) else None


def _numbers(finding: Finding) -> list[dict[str, str]]:
    """Number indicators of a fraud finding: E.164 values and E.164 prefixes it names."""
    found: list[dict[str, str]] = []
    for key, value in sorted(finding.indicators.items()):
        if key in ("msisdn", "imsi"):
            continue
        text = value.strip()
        if "prefix" in key or "range" in key:
            if _E164_PREFIX.match(text):
                found.append({"type": "e164_prefix", "value": text, "role": "destination"})
            continue
        if _E164.match(text):
            role = "caller" if key in _CALLER_KEYS else "destination"
            found.append({"type": "tel", "value": text, "role": role})
    return found


def _indicators(finding: Finding, kind: str) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    if finding.source is not None:
        found += _ip_indicator(finding.source.ip, "source")
    elif finding.target is not None and finding.target.ip:
        # Many sources, one target (fan-in): the attacked address is what peers can act on.
        found += _ip_indicator(finding.target.ip, "destination")
    user_agent = finding.indicators.get("user_agent", "")
    if user_agent and _USER_AGENT.match(user_agent):
        found.append({"type": "user_agent", "value": user_agent, "role": "source"})
    if kind in _NUMBER_EVENTS:
        found += _numbers(finding)
    return found[:_MAX_INDICATORS]


def _ip_indicator(ip: str, role: str) -> list[dict[str, str]]:
    try:
        version = ipaddress.ip_address(ip).version
    except ValueError:
        return []
    return [{"type": f"ipv{version}", "value": ip, "role": role}]


def _action(finding: Finding) -> dict[str, Any]:
    """The finding's recommended action in schema-1.0 form: a TTL where the schema requires
    one, inside its bounds; a RATE_LIMIT with a ``rate_limit`` or, when the finding does not
    say what rate was too much, MONITOR instead of a made-up limit."""
    action = finding.recommended_action or RecommendedAction("MONITOR")
    code = action.action_code if action.action_code in _ACTIONS else "MONITOR"
    data: dict[str, Any] = {"action_code": code}
    rate_limit = _rate_limit(finding) if code == "RATE_LIMIT" else None
    if code == "RATE_LIMIT" and rate_limit is None:
        code = data["action_code"] = "MONITOR"
    ttl = action.suggested_ttl_seconds
    if code == "NONE":
        return data
    if ttl is not None or code in _NEEDS_TTL:
        ttl = DEFAULT_ACTION_TTL_S if ttl is None else ttl
        data["suggested_ttl_seconds"] = min(max(int(ttl), _TTL_MIN_S), _TTL_MAX_S)
    if rate_limit is not None:
        data["rate_limit"] = rate_limit
    return data


def _rate_limit(finding: Finding) -> dict[str, int] | None:
    """From a window detector's indicators (``window_s`` and one ``*_in_window`` count): at
    most one fewer than the count that fired per window - the detector's own benign ceiling."""
    window = finding.indicators.get("window_s")
    counts = [v for k, v in finding.indicators.items() if k.endswith("_in_window")]
    if window is None or len(counts) != 1:
        return None
    try:
        per_seconds = round(float(window))
        fired_at = int(counts[0])
    except (ValueError, OverflowError):  # "nan", "inf": not a window a peer can apply
        return None
    if not 1 <= per_seconds <= 86_400 or fired_at < 2:
        return None
    return {"max_requests": fired_at - 1, "per_seconds": per_seconds}
