"""injection: SQL / script / command / format-string / CRLF payloads in SIP fields
(conventions.md §1).

Theory of operation
-------------------
SIP carries strings that end up in databases (CDRs, registrars, billing), web consoles (Homer,
PBX GUIs), shells (provisioning scripts) and C ``printf`` calls (logs of old stacks). The fields
an attacker chooses freely - the Request-URI, the display name, user and host of the address
headers (From, To, Contact, P-Asserted-/P-Preferred-Identity, Remote-Party-ID, Diversion,
Refer-To, Referred-By, Reply-To), User-Agent, Subject, Organization, Call-ID and the digest
username - are decoded
(%-escapes, repeatedly up to ``decode_rounds`` times, because double encoding is the usual
filter evasion) and matched against a small set of *precise* patterns per class:

* ``sql``: a quote followed by a tautology (``' or '1'='1``, ``' or 1=1``), ``union select``,
  a quote or ``;`` followed by a comment ``--``, a closed literal then a stacked statement
  with its own keywords (``1; drop table``, ``'; delete from``, ``1; update … set …=``,
  ``'; select * from``),
  time-based probes (``sleep(5``, ``benchmark(1``, ``pg_sleep(5``, ``waitfor delay '``);
* ``script``: ``<script``, ``javascript:`` / ``vbscript:``, ``on<event>=``, ``<img|svg|iframe``;
* ``command``: ``$(…)``, a backtick command, ``| || &&`` before a shell command word that ends
  the value or takes an argument, ``;`` before one whose argument looks like shell (``; rm
  -rf``, ``;cat /…``), ``/etc/passwd``. Command words match case-sensitively, as a shell runs
  them (``Sales | Echo``, ``Caller | ID 42`` are prose);
* ``format_string``: ``%n``, a positional conversion (``%2$s``), or at least
  ``min_format_conversions`` ``%s``/``%x``/``%p`` conversions in one field;
* ``crlf``: a CR or LF that only appears after %-decoding (header injection into whatever
  re-emits the value).

A quote alone is never a signal: Kamailio secfilter's SQL check rejects any ``'``, ``"``, ``--``
or ``%27`` and so blocks ``From: "O'Reilly"`` (kamailio/kamailio#3984), and ET Open has no SIP
SQL-injection rule at all (detection-anchors §1a, §3, §4 item 10). Every pattern uses bounded
repetition only (no nested unbounded quantifiers), so matching stays linear in the field length
even for a hostile 16 KB value.

A single ``%s`` is *not* reported: mutation fuzzers (the corpus' ndpi fuzz capture inserts
``%s\\0`` into random headers, e.g. ``User-Agent: Ne%s\\0SIPPS``) produce them and the message is
then malformed anyway; ``malformed.parser_defect`` reports that. Two or more conversions, ``%n``
or a positional one is a format-string attack and reported here. Responses are not inspected:
the party judged is the one that wrote the request.
"""

from __future__ import annotations

import re
from typing import ClassVar
from urllib.parse import unquote

from pydantic import Field

from sipwarden.detect.base import Detector, DetectorConfig
from sipwarden.detect.finding import Finding, RecommendedAction, Target
from sipwarden.detect.observation import Observation
from sipwarden.detect.registry import register
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.sip import Request, SipParseError
from sipwarden.sip.hdr.name_addr import parse_contact, parse_name_addr_list

__all__ = ["PayloadInUserField", "PayloadInUserFieldConfig", "find_payloads"]

_ADDRESS, _CREDENTIALS, _TEXT = 0, 1, 2
#: Headers whose values the sender chooses freely (canonical key -> indicator name, kind).
_INSPECTED: dict[str, tuple[str, int]] = {
    "from": ("from", _ADDRESS),
    "to": ("to", _ADDRESS),
    "contact": ("contact", _ADDRESS),
    "p-asserted-identity": ("p_asserted_identity", _ADDRESS),
    "p-preferred-identity": ("p_preferred_identity", _ADDRESS),
    "remote-party-id": ("remote_party_id", _ADDRESS),
    "diversion": ("diversion", _ADDRESS),
    "refer-to": ("refer_to", _ADDRESS),
    "referred-by": ("referred_by", _ADDRESS),
    "reply-to": ("reply_to", _ADDRESS),
    "authorization": ("authorization", _CREDENTIALS),
    "proxy-authorization": ("proxy_authorization", _CREDENTIALS),
    "user-agent": ("user_agent", _TEXT),
    "subject": ("subject", _TEXT),
    "organization": ("organization", _TEXT),
    "call-id": ("call_id", _TEXT),
}
#: An address value whose display name and URI user hold nothing any pattern needs (no quote,
#: escape, bracket, ``$``, ``;``, ``=`` ... in them): the common case, skipped with one match.
#: Parameters after the URI are not inspected, so they may hold anything.
_PLAIN_USER = (
    r"(?:sips?|tel):(?:[\w.+!*~-]*@)?(?:[\w.+-]+|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
    r"(?:[;>?]|$)"
)
_PLAIN_ADDRESS = re.compile(
    rf'[ \t]*(?:"[\w .+#*!@-]*"|[\w.+-]+(?:[ \t]+[\w.+-]+)*)?[ \t]*<?{_PLAIN_USER}'
)
_PLAIN_URI = re.compile(_PLAIN_USER)
_UNION = re.compile("union", re.IGNORECASE)
_USERNAME = re.compile(r'username[ \t]*=[ \t]*"([^"]{0,512})"', re.IGNORECASE)
#: Values made only of these characters cannot hold any payload below except "union select".
_PLAIN = re.compile(r"[A-Za-z0-9 _.+@!#*,-]*")
#: Addresses of one header value, and inspected header fields of one message, looked at (a
#: header bomb is malformed's business).
_MAX_OCCURRENCES = 8
_MAX_INSPECTED_FIELDS = 32
#: Characters of a match copied into the finding (attacker-chosen text).
_MAX_MATCH_CHARS = 64

_W = r"[ \t]"
#: Blanks or inline comments between SQL keywords (``union/**/select``), bounded.
_SQL_GAP = rf"(?:{_W}|/\*[^*]{{0,32}}\*/){{1,8}}"
#: Shell command words. Matched case-sensitively, as a shell runs them: "Echo", "ID" or "Cat"
#: in a display name is prose, not a command.
_CMD = (
    r"(?:cat|wget|curl|nc|ncat|bash|sh|rm|uname|whoami|id|ping|echo|telnet|chmod|python|perl"
    r"|sleep|nslookup)"
)
#: One regex per class, run only when the value holds one of the class' gate substrings
#: (lower-cased): a plain ``in`` test costs far less than trying every branch at every position.
_CLASSES: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = (
    (
        "sql",
        (
            "'",
            "--",
            "union",
            "sleep",
            "benchmark",
            "drop",
            "delete",
            "insert",
            "update",
            "truncate",
            "select",
        ),
        re.compile(
            rf"'{_W}{{0,8}}(?:or|and){_W}{{1,8}}'?\w{{1,16}}'?{_W}{{0,8}}(?:=|like\b)"
            rf"|\bunion{_SQL_GAP}(?:all{_SQL_GAP})?select\b"
            rf"|[';]{_W}{{0,8}}--|\"--"
            # A stacked query: a literal closed (quote, digit or ")"), ";", then a statement
            # with its own keywords, so that free text ("Alice; delete from list", "Status;
            # update follows", "Meeting; select winners") stays silent.
            rf"|['\d)]{_W}{{0,8}};{_W}{{0,8}}(?:drop{_W}{{1,8}}(?:table|database|schema|user)\b"
            rf"|delete{_W}{{1,8}}from\b|insert{_W}{{1,8}}into\b|truncate{_W}{{1,8}}table\b"
            rf"|update{_W}{{1,8}}\w{{1,64}}{_W}{{1,8}}set{_W}{{1,8}}\w{{1,64}}{_W}{{0,8}}="
            rf"|select{_W}{{1,8}}(?:\*|@@\w|[^;]{{1,64}}?{_W}from\b))"
            # MySQL/PostgreSQL need the "(" right after a built-in name; the argument is a
            # number (or an expression for benchmark), unlike prose such as "Sleep (3)".
            rf"|\b(?:sleep|pg_sleep)\({_W}{{0,8}}\d|\bbenchmark\({_W}{{0,8}}\d"
            rf"|\bwaitfor{_W}{{1,8}}delay{_W}{{0,8}}'",
            re.IGNORECASE,
        ),
    ),
    (
        "script",
        (
            "script",
            "onerror",
            "onload",
            "onmouseover",
            "onfocus",
            "onclick",
            "onsubmit",
            "ontoggle",
            "img",
            "svg",
            "iframe",
        ),
        re.compile(
            rf"<{_W}{{0,8}}/?{_W}{{0,8}}script\b"
            rf"|\b(?:java|vb)script{_W}{{0,8}}:"
            rf"|\bon(?:error|load|mouseover|focus|click|submit|toggle){_W}{{0,8}}="
            rf"|<{_W}{{0,8}}(?:img|svg|iframe)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "command",
        ("$(", "`", "/etc/", "|", "&&", ";"),
        re.compile(
            rf"\$\([^)]{{1,64}}\)"
            rf"|`{_W}{{0,4}}{_CMD}\b[^`]{{0,64}}`"
            # After a pipe or "&&" a command word ends the value, ends a command, or takes an
            # argument that looks like one (option, path, variable, quote, URL; a number only
            # for the commands that take a host or a count).
            rf"|(?:\|\|?|&&){_W}{{0,8}}(?:{_CMD}"
            rf"(?:{_W}{{0,8}}(?:$|[;|&#`)])|{_W}{{1,8}}(?:[-/$'\"~]|https?:|ftp:))"
            rf"|(?:nc|ncat|ping|sleep|telnet){_W}{{1,8}}\d)"
            # After ";" (common in free text) a command word needs a shell-looking argument,
            # and a number is not one ("Meeting; rm 204").
            rf"|;{_W}{{0,8}}{_CMD}{_W}{{1,8}}(?:[-/$'\"~]|https?:|ftp:)"
            rf"|;{_W}{{0,8}}(?:whoami|uname)\b"
            rf"|/etc/(?:passwd|shadow)\b",
        ),
    ),
)
# The space flag is left out on purpose: "100% sure, 50% sale" would otherwise be two "% s".
_CONVERSION = re.compile(r"%[-+#0]{0,4}[0-9]{0,4}(?:\.[0-9]{1,4})?[sxp]", re.IGNORECASE)
_PRINTABLE_ESCAPE = re.compile(r"%[2-7][0-9A-Fa-f]")
_FORMAT_ALWAYS = re.compile(r"%(?:[0-9]{1,3}\$)?[-+#0]{0,4}[0-9]{0,4}n|%[0-9]{1,3}\$[sxpd]")

#: Severity and confidence per class: the first three have no benign reading; a format string
#: or an encoded CRLF is hostile too but also a fuzzer's or a broken encoder's signature.
_GRADES: dict[str, tuple[Severity, int]] = {
    "sql": (Severity.HIGH, 85),
    "script": (Severity.HIGH, 85),
    "command": (Severity.HIGH, 85),
    "format_string": (Severity.MEDIUM, 70),
    "crlf": (Severity.MEDIUM, 70),
}
_BLOCKED_CLASSES = frozenset({"sql", "script", "command"})


class PayloadInUserFieldConfig(DetectorConfig):
    decode_rounds: int = Field(
        3,
        ge=1,
        le=8,
        description=(
            "How many times %-escapes are decoded before matching (each round only while it "
            "still changes the value). No published anchor: 2 catches the double encoding "
            "filters most often miss (%2527 -> %27 -> '); 3 adds a margin; secfilter decodes "
            "none and only lists %27/%22/%60 literally (detection-anchors §2.3)."
        ),
    )
    min_format_conversions: int = Field(
        2,
        ge=1,
        description=(
            "%s/%x/%p conversions in one field that make a format-string finding (%n and "
            "positional %N$ always do). Default 2: one %s is what mutation fuzzers sprinkle "
            "(corpus ndpi fuzz capture, reported by malformed.parser_defect); no published "
            "anchor."
        ),
    )
    block_ttl_s: int = Field(
        300,
        ge=1,
        description=(
            "Suggested TEMP_BLOCK duration for SQL/script/command payloads, seconds. Default "
            "as the Kamailio default config's ban (htable ipban autoexpire=300, "
            "detection-anchors §2.1)."
        ),
    )


def _decodings(value: str, rounds: int) -> list[str]:
    """``value`` and each %-decoding of it that changed something, at most ``rounds`` more."""
    stages = [value]
    for _ in range(rounds):
        text = stages[-1]
        if "%" not in text:
            break
        decoded = unquote(text, errors="replace")
        if decoded == text:
            break
        stages.append(decoded)
    return stages


def _is_conversion(_: str) -> bool:
    return True


def _is_unescaped_conversion(conversion: str) -> bool:
    """False for a "conversion" that is really a printable %-escape (%20-%7F) plus a letter."""
    return not _PRINTABLE_ESCAPE.match(conversion)


def _show(text: str) -> str:
    """A match as printable text for indicators: control characters escaped, cut."""
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")[:_MAX_MATCH_CHARS]


def find_payloads(value: str, decode_rounds: int = 3, min_conversions: int = 2) -> dict[str, str]:
    """Payload classes found in one field value, each with its first match (for indicators).

    Pure and linear in ``len(value)``: usable by the gateway and tests alike."""
    if _PLAIN.fullmatch(value) and "union" not in value.lower():
        return {}  # the common case, decided without trying a pattern
    stages = _decodings(value, decode_rounds)
    decoded = stages[-1]
    found: dict[str, str] = {}
    lowered = decoded.lower()
    for kind, gates, pattern in _CLASSES:
        if any(gate in lowered for gate in gates):
            match = pattern.search(decoded)
            if match is not None:
                found[kind] = _show(match.group())
    # Every stage, not only the last: decoding eats conversions that look like escapes
    # ("%08x" is byte 0x08 then "x"), and creates others ("%2525n" -> "%n"). In a stage that
    # decodes further, "%20s" or "%25n" is a printable escape, not a conversion.
    last = len(stages) - 1
    for i, text in enumerate(stages):
        if "format_string" in found or "%" not in text:
            continue
        keep = _is_conversion if i == last else _is_unescaped_conversion
        always = next((m for m in _FORMAT_ALWAYS.finditer(text) if keep(m.group())), None)
        if always is not None:
            found["format_string"] = _show(always.group())
            continue
        conversions = [c for c in _CONVERSION.findall(text) if keep(c)]
        if len(conversions) >= min_conversions:
            found["format_string"] = _show("".join(conversions[:8]))
    if ("\r" in decoded or "\n" in decoded) and "\r" not in value and "\n" not in value:
        position = min(i for i in (decoded.find("\r"), decoded.find("\n")) if i >= 0)
        found["crlf"] = _show(decoded[max(0, position - 24) : position + 24])
    return found


@register
class PayloadInUserField(Detector):
    """SQL, script, shell, format-string or CRLF payloads in user-controlled request fields.

    Signal: after %-decoding, a precise payload pattern (module docstring) in the
    Request-URI, an address header (From, To, Contact, P-Asserted-/P-Preferred-Identity,
    Remote-Party-ID, Diversion, Refer-To, Referred-By, Reply-To), User-Agent, Subject,
    Organization, Call-ID or (Proxy-)Authorization of a request. One hit per payload class
    and message, keyed by source and class. Why: SIP strings reach SQL (CDR/registrar
    databases), web consoles, shells and printf-style logging; SIP fuzzers (PROTOS c07-sip,
    VoIPER) send format strings, and whatever displays or stores From/User-Agent inherits the
    rest.
    Defaults' anchor: Kamailio secfilter's SQL check - what it does and what it gets wrong
    (quote characters only; O'Reilly rejected, kamailio#3984) - and the missing ET Open SIP
    SQLi rule (detection-anchors §1a, §3, §4 item 10); the ban TTL is the Kamailio default
    config's 300 s.
    Severity: high for SQL/script/command (no benign reading), medium for format strings and
    encoded CRLF. Known false positives: a display name that really contains a shell or SQL
    fragment (``"Bob; rm -rf"``), test tools run by the operator (allow-list them).
    """

    id: ClassVar[str] = "injection.payload_in_user_field"
    threat: ClassVar[Threat] = Threat.INJECTION
    Config: ClassVar[type[DetectorConfig]] = PayloadInUserFieldConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, PayloadInUserFieldConfig)
        cfg = self.config
        self._rounds = cfg.decode_rounds
        self._min_conversions = cfg.min_format_conversions
        self._block = RecommendedAction("TEMP_BLOCK", cfg.block_ttl_s)
        self._monitor = RecommendedAction("MONITOR", cfg.block_ttl_s)

    def observe(self, obs: Observation) -> list[Finding]:
        request = obs.request
        if request is None or self.allowed(obs.src.ip):
            return []
        found: dict[str, tuple[str, str]] = {}
        for field, value in _field_values(request):
            for kind, snippet in find_payloads(value, self._rounds, self._min_conversions).items():
                found.setdefault(kind, (field, snippet))
        return [self._hit(obs, kind, field, snippet) for kind, (field, snippet) in found.items()]

    def _hit(self, obs: Observation, kind: str, field: str, snippet: str) -> Finding:
        severity, confidence = _GRADES[kind]
        action = self._block if kind in _BLOCKED_CLASSES else self._monitor
        return self.hit(
            obs,
            severity,
            confidence,
            f"{kind.replace('_', '-')} payload in {field} from {obs.src.ip}: {snippet!r}",
            f"{obs.src.ip}|{kind}",
            target=Target(obs.dst.ip, obs.dst.port),
            indicators={"payload_class": kind, "field": field, "match": snippet},
            action=action,
        )


def _field_values(request: Request) -> list[tuple[str, str]]:
    """The user-controlled parts of the inspected fields that could hold a payload, as
    written (decoding happens per value): display name and URI user of address headers, the
    digest username, the whole value of free-text headers.

    One pass over the header fields; a value that is plain by construction (``_PLAIN_*``) is
    skipped there, the rest are parsed. A value that does not parse - payloads often break the
    grammar - is inspected whole, so the payload is still seen."""
    values: list[tuple[str, str]] = []
    if _PLAIN_URI.match(request.uri) is None or _UNION.search(request.uri):
        try:
            values.append(("request_uri", request.request_uri.user or ""))
        except SipParseError:
            values.append(("request_uri", request.uri))
    seen = 0
    for key, _, value in request.headers.fields:
        inspected = _INSPECTED.get(key)
        if inspected is None:
            continue
        seen += 1
        if seen > _MAX_INSPECTED_FIELDS:
            break
        field, kind = inspected
        if kind == _TEXT:
            values.append((field, value))
        elif kind == _CREDENTIALS:
            match = _USERNAME.search(value)
            values.append((field, match.group(1) if match is not None else value))
        elif _PLAIN_ADDRESS.match(value) is None or "," in value or _UNION.search(value):
            values.extend((field, part) for part in _address_parts(key, value))
    return values


def _address_parts(key: str, value: str) -> list[str]:
    try:
        addresses = parse_contact(value) if key == "contact" else parse_name_addr_list(value)
    except ValueError:
        return [value]
    parts: list[str] = []
    for address in addresses[:_MAX_OCCURRENCES]:
        if address.display_name:
            parts.append(address.display_name)
        if address.wildcard:
            continue
        try:
            uri = address.uri
        except ValueError:
            parts.append(address.uri_text)
            continue
        parts.extend(part for part in (uri.user, uri.host) if part)
    return parts
