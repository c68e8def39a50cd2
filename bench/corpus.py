"""A deterministic, realistic SIP message corpus for the parser benchmark (``bench/parse.py``).

``generate(n, seed)`` returns exactly ``n`` SIP messages as ``bytes`` (CRLF line ends, UTF-8), the
same list for the same ``(n, seed)`` on every machine: all randomness comes from one seeded
:class:`random.Random`. ``generate_labeled`` returns the same messages with a short kind label
each ("INVITE", "200 INVITE", "REGISTER+auth", "ACK trunk", ...) for per-kind timing.

What is in it, as a sensor next to a few small PBXs would see it:

* registrations: REGISTER -> 401 (WWW-Authenticate: Digest realm, nonce, algorithm=MD5,
  qop="auth") -> REGISTER with Authorization (username, realm, nonce, uri, response - a real
  MD5 digest -, algorithm, cnonce, qop, nc) -> 200 OK with Contact;expires (a few end in 403);
* OPTIONS keep-alives (PBX qualify -> phone, phone -> PBX, SBC dispatcher ping -> PBX) and
  their 200;
* calls phone -> PBX and PBX -> phone: INVITE with SDP (v/o/s/c/t/m/a, correct
  Content-Length) -> 100 Trying -> 180 Ringing -> 200 OK with SDP -> ACK -> BYE (either side)
  -> 200; CANCEL -> 200 -> 487 -> ACK; failures 403/404/480/486/503/603 -> ACK;
* trunk calls from a Kamailio SBC: two Via headers, Record-Route, P-Asserted-Identity, Allow,
  Supported, Session-Expires/Min-SE, E.164 numbers; in-dialog requests with Route.

Software: Asterisk PBX 20.x, FreeSWITCH, Kamailio, Linphone, Zoiper, Yealink, Polycom and a
few pjsua clients that use the compact header forms (``v:``, ``f:``, ``t:``, ``i:``, ...). Each
brand has its own header order, tag/branch/Call-ID shapes and Allow/Supported lists, as real
stacks do; FreeSWITCH and the desk phones name their software with User-Agent even in
responses, so some responses carry no Server header. Addresses are IPv4 from the
documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24), host names are under
example.com/example.net, numbers are from fictional ranges (NANP 555-01xx, Ofcom 020 7946 0xxx,
ACMA 02 5550 xxxx, ARCEP 01 99 00 xx xx).

Flows overlap as on a real link: ``concurrency`` (default 64) flows are in progress at once and
each next message comes from one of them at random, so a dialog's messages are spread out among
other traffic rather than back to back (which would flatter a parser that caches header values
between messages).

Every message has Via, From, To, Call-ID, CSeq and Content-Length (requests also Max-Forwards),
branches start with the z9hG4bK cookie, and dialog/transaction rules hold (CANCEL and non-2xx
ACK reuse the INVITE branch, 2xx ACK and BYE get new ones, To tags appear from the first
non-100 response on).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["DEFAULT_CONCURRENCY", "DEFAULT_MESSAGES", "generate", "generate_labeled"]

#: The benchmark's default corpus size.
DEFAULT_MESSAGES = 100_000

CRLF = "\r\n"
_ALNUM = string.ascii_letters + string.digits
_BASE_TIME = 1_700_000_000  # 2023-11-14, for Date headers and Asterisk nonces

Rng = random.Random
Labeled = tuple[str, bytes]
Header = tuple[str, str]

REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    503: "Service Unavailable",
    603: "Decline",
}

#: RFC 3261 §7.3.3 compact forms (plus RFC 4028 ``x``), used by the compact-form brand.
_COMPACT = {
    "Via": "v",
    "From": "f",
    "To": "t",
    "Call-ID": "i",
    "Contact": "m",
    "Content-Length": "l",
    "Content-Type": "c",
    "Supported": "k",
    "Session-Expires": "x",
}


# --- random shapes ---------------------------------------------------------------------------


def _hex(rng: Rng, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _uhex(rng: Rng, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}X}"


def _alnum(rng: Rng, n: int) -> str:
    return "".join(rng.choices(_ALNUM, k=n))


def _digits(rng: Rng, n: int) -> str:
    return str(rng.randrange(10 ** (n - 1), 10**n))


def _uuid(rng: Rng) -> str:
    h = _hex(rng, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:]}"


def _zoiper_call_id(rng: Rng, _ip: str) -> str:
    return base64.b64encode(_hex(rng, 32).encode()).decode().rstrip("=") + "."


def _names(words: str) -> tuple[str, ...]:
    return tuple(words.split())


# --- software ("brands") ---------------------------------------------------------------------


@dataclass
class Brand:
    """How one SIP stack writes messages."""

    key: str
    agents: tuple[str, ...]
    order: tuple[str, ...]
    tag: Callable[[Rng], str]
    branch: Callable[[Rng], str]
    call_id: Callable[[Rng, str], str]
    first_cseq: Callable[[Rng], int]
    allow: str | None
    supported: str | None
    sdp_user: str
    sdp_session: str
    codecs: tuple[tuple[int, str, str], ...]  # payload type, rtpmap, fmtp ("" for none)
    sdp_attrs: tuple[str, ...] = ("a=ptime:20", "a=sendrecv")
    resp_order: tuple[str, ...] | None = None
    resp_agent: str = "Server"  # header naming the software in responses
    agent_on_ack: bool = True
    agent_on_100: bool = True
    rport: bool = True
    rport_first: bool = False
    via_default_port: bool = True  # write ":5060" in Via sent-by
    expires_in_contact: bool = False
    auth_sep: str = ","
    cl_sep: str = " "
    compact: bool = False
    rank: dict[str, int] = field(init=False, repr=False)
    resp_rank: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rank = {name: i for i, name in enumerate(self.order)}
        self.resp_rank = {name: i for i, name in enumerate(self.resp_order or self.order)}


_G711 = ((0, "PCMU/8000", ""), (8, "PCMA/8000", ""))
_DTMF = (101, "telephone-event/8000", "0-16")

ASTERISK = Brand(
    key="asterisk",
    agents=(
        "Asterisk PBX 20.5.2",
        "Asterisk PBX 20.6.0",
        "Asterisk PBX 20.8.1",
        "Asterisk PBX 20.10.0",
    ),
    order=_names(
        "Via Route Record-Route From To Contact Call-ID CSeq Authorization Allow "
        "Supported Session-Expires Min-SE P-Asserted-Identity Max-Forwards Expires "
        "User-Agent Accept Content-Type Content-Length"
    ),
    resp_order=_names(
        "Via Record-Route Call-ID From To CSeq Date WWW-Authenticate Server Allow "
        "Supported Require Session-Expires Contact Expires Accept Content-Type "
        "Content-Length"
    ),
    tag=_uuid,
    branch=lambda r: "z9hG4bKPj" + _uuid(r),
    call_id=lambda r, _ip: _uuid(r),
    first_cseq=lambda r: r.randint(1000, 65000),
    allow="OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, "
    "PRACK, INFO, MESSAGE, REFER",
    supported="100rel, timer, replaces, norefersub, histinfo",
    sdp_user="-",
    sdp_session="Asterisk",
    codecs=(*_G711, _DTMF),
    sdp_attrs=("a=ptime:20", "a=maxptime:150", "a=sendrecv"),
    rport_first=True,
    cl_sep="  ",
)

FREESWITCH = Brand(
    key="freeswitch",
    agents=(
        "FreeSWITCH-mod_sofia/1.10.11-release~64bit",
        "FreeSWITCH-mod_sofia/1.10.10-release~64bit",
    ),
    order=_names(
        "Via Route Record-Route Max-Forwards From To Call-ID CSeq Contact User-Agent "
        "Allow Supported Require Allow-Events Session-Expires Min-SE "
        "P-Asserted-Identity WWW-Authenticate Authorization Expires Date Accept "
        "Content-Type Content-Disposition Content-Length"
    ),
    tag=lambda r: _alnum(r, 13),
    branch=lambda r: "z9hG4bK" + _alnum(r, 13),
    call_id=lambda r, _ip: _uuid(r),
    first_cseq=lambda r: r.randint(10**7, 10**8),
    allow="INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REGISTER, REFER, NOTIFY, "
    "PUBLISH, SUBSCRIBE",
    supported="timer, path, replaces",
    sdp_user="FreeSWITCH",
    sdp_session="FreeSWITCH",
    codecs=(*_G711, _DTMF),
    resp_agent="User-Agent",
    auth_sep=", ",
)

KAMAILIO = Brand(
    key="kamailio",
    agents=("kamailio (5.7.4 (x86_64/linux))", "kamailio (5.8.2 (x86_64/linux))"),
    order=_names(
        "Record-Route Via Route Max-Forwards From To Call-ID CSeq Contact "
        "P-Asserted-Identity Allow Supported Session-Expires Min-SE User-Agent Server "
        "Content-Type Content-Length"
    ),
    tag=lambda r: f"{_hex(r, 8)}-{_hex(r, 4)}",
    branch=lambda r: f"z9hG4bK{_hex(r, 4)}.{_hex(r, 32)}.0",
    call_id=lambda r, ip: f"{_hex(r, 16)}-{_digits(r, 4)}@{ip}",
    first_cseq=lambda r: r.randint(1, 9000),
    allow="INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO",
    supported="timer, 100rel",
    sdp_user="-",
    sdp_session="SBC call",
    codecs=(*_G711, (18, "G729/8000", "annexb=no"), _DTMF),
    via_default_port=False,
    rport=False,
)

LINPHONE = Brand(
    key="linphone",
    agents=(
        "Linphone Desktop/5.2.4 (Ubuntu 22.04.3 LTS, Qt 5.15.2) LinphoneCore/5.3.38",
        "LinphoneAndroid/5.2.1 (Pixel 7) LinphoneSDK/5.3.47",
        "LinphoneiOS/5.2.0 (iPhone) LinphoneSDK/5.3.30",
    ),
    order=_names(
        "Via Route Record-Route From To CSeq Call-ID Max-Forwards Supported Allow "
        "Accept Authorization Content-Type Contact Expires User-Agent Server "
        "Session-Expires Content-Length"
    ),
    tag=lambda r: _alnum(r, 9),
    branch=lambda r: "z9hG4bK." + _alnum(r, 9),
    call_id=lambda r, _ip: _alnum(r, 10),
    first_cseq=lambda r: r.randint(20, 200),
    allow="INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, PRACK, "
    "UPDATE",
    supported="replaces, outbound, gruu, path",
    sdp_user="linphone",
    sdp_session="Talk",
    codecs=((96, "opus/48000/2", "useinbandfec=1"), *_G711, (101, "telephone-event/48000", "")),
    sdp_attrs=("a=rtcp-fb:* trr-int 1000", "a=rtcp-fb:* ccm tmmbr"),
)

ZOIPER = Brand(
    key="zoiper",
    agents=("Z 5.6.4 v2.10.20.2", "Z 5.6.1 v2.10.19.9-mod", "Zoiper rv2.10.18.2"),
    order=_names(
        "Via Route Record-Route Max-Forwards Contact To From Call-ID CSeq Expires Allow "
        "Authorization Content-Type Supported User-Agent Server Allow-Events Accept "
        "Content-Length"
    ),
    tag=lambda r: _hex(r, 8),
    branch=lambda r: "z9hG4bK-524287-1---" + _hex(r, 16),
    call_id=_zoiper_call_id,
    first_cseq=lambda r: r.randint(1, 50),
    allow="INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE",
    supported="replaces, norefersub, extended-refer, timer, sec-agree, outbound, path, "
    "X-cisco-serviceuri",
    sdp_user="Z",
    sdp_session="Z",
    codecs=(
        (106, "opus/48000/2", "sprop-maxcapturerate=16000; minptime=20; useinbandfec=1"),
        (9, "G722/8000", ""),
        *_G711,
        (101, "telephone-event/8000", "0-16"),
    ),
    expires_in_contact=True,
)

YEALINK = Brand(
    key="yealink",
    agents=(
        "Yealink SIP-T46U 108.86.0.90",
        "Yealink SIP-T54W 96.86.0.100",
        "Yealink SIP-T31G 124.86.0.75",
    ),
    order=_names(
        "Via Route Record-Route From To Call-ID CSeq Contact Authorization Content-Type "
        "Allow Max-Forwards User-Agent Server Allow-Events Supported Expires Accept "
        "Content-Length"
    ),
    tag=lambda r: _digits(r, 10),
    branch=lambda r: "z9hG4bK" + _digits(r, 10),
    call_id=lambda r, ip: f"{r.randint(0, 9)}_{_digits(r, 10)}@{ip}",
    first_cseq=lambda r: r.randint(1, 40),
    allow="INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, SUBSCRIBE, REFER, "
    "PUBLISH, UPDATE, MESSAGE",
    supported="replaces",
    sdp_user="-",
    sdp_session="SDP data",
    codecs=(
        *_G711,
        (9, "G722/8000", ""),
        (18, "G729/8000", "annexb=no"),
        (101, "telephone-event/8000", "0-15"),
    ),
    resp_agent="User-Agent",
    rport=False,
    auth_sep=", ",
)

POLYCOM = Brand(
    key="polycom",
    agents=(
        "PolycomVVX-VVX_450-UA/6.4.3.5018",
        "PolycomVVX-VVX_411-UA/6.3.1.8427",
        "PolycomVVX-VVX_250-UA/6.4.6.2494",
    ),
    order=_names(
        "Via Route Record-Route From To CSeq Call-ID Contact User-Agent Server "
        "Accept-Language Supported Allow Allow-Events Authorization Max-Forwards "
        "Expires Accept Content-Type Content-Length"
    ),
    tag=lambda r: f"{_uhex(r, 8)}-{_uhex(r, 8)}",
    branch=lambda r: "z9hG4bK" + _hex(r, 8) + _uhex(r, 8),
    call_id=lambda r, ip: f"{_hex(r, 8)}-{_hex(r, 8)}-{_hex(r, 8)}@{ip}",
    first_cseq=lambda r: r.randint(1, 40),
    allow="INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, MESSAGE, SUBSCRIBE, NOTIFY, PRACK, UPDATE, "
    "REFER",
    supported="100rel,replaces",
    sdp_user="-",
    sdp_session="Polycom IP Phone",
    codecs=((9, "G722/8000", ""), *_G711, (127, "telephone-event/8000", "")),
    resp_agent="User-Agent",
    agent_on_ack=False,
    via_default_port=False,
)

PJSUA = Brand(
    key="pjsua",
    agents=("PJSUA v2.14.1 Linux-6.5.0.27/x86_64",),
    order=_names(
        "Via Route Record-Route Max-Forwards From To Contact Call-ID CSeq Allow "
        "Supported Session-Expires Min-SE User-Agent Server Authorization Expires "
        "Accept Content-Type Content-Length"
    ),
    tag=lambda r: _alnum(r, 32),
    branch=lambda r: "z9hG4bKPj" + _alnum(r, 32),
    call_id=lambda r, _ip: _alnum(r, 32),
    first_cseq=lambda r: r.randint(1000, 30000),
    allow="PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, INFO, SUBSCRIBE, NOTIFY, REFER, MESSAGE, "
    "OPTIONS",
    supported="replaces, 100rel, timer, norefersub",
    sdp_user="-",
    sdp_session="pjmedia",
    codecs=(
        (96, "speex/16000", ""),
        (3, "GSM/8000", ""),
        *_G711,
        (120, "telephone-event/8000", "0-16"),
    ),
    sdp_attrs=("a=X-nat:0", "a=sendrecv"),
    rport_first=True,
    compact=True,
)

_PHONE_BRANDS = (YEALINK, POLYCOM, ZOIPER, LINPHONE, PJSUA)
_PHONE_WEIGHTS = (34, 22, 22, 17, 5)

_FIRST = (
    "Alice",
    "Bob",
    "Carol",
    "Dave",
    "Erin",
    "Frank",
    "Grace",
    "Heidi",
    "Ivan",
    "Judy",
    "Mallory",
    "Niaj",
    "Olivia",
    "Peggy",
    "Rupert",
    "Sybil",
    "Trent",
    "Victor",
    "Walter",
    "José",
    "Jürgen",
    "Zoë",
)
_LAST = (
    "Smith",
    "Jones",
    "Nguyen",
    "O'Brien",
    "García",
    "Müller",
    "Kowalski",
    "Tanaka",
    "Okafor",
    "Dubois",
    "Rossi",
    "Larsen",
)


# --- nodes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One SIP endpoint: a phone, a PBX or an SBC."""

    brand: Brand
    agent: str
    ip: str
    port: int = 5060
    transport: str = "UDP"
    user: str = ""
    name: str = ""
    password: str = ""

    def via(self, branch: str, filled: bool = False) -> str:
        """This node's Via; ``filled`` adds what the receiver writes back (rport/received)."""
        b = self.brand
        sent_by = (
            self.ip if self.port == 5060 and not b.via_default_port else (f"{self.ip}:{self.port}")
        )
        params = [f"branch={branch}"]
        if b.rport:
            rport = f"rport={self.port};received={self.ip}" if filled else "rport"
            params.insert(0 if b.rport_first else 1, rport)
        return f"SIP/2.0/{self.transport} {sent_by};{';'.join(params)}"

    def contact_uri(self, user: str | None = None) -> str:
        u = self.user if user is None else user
        at = f"{u}@" if u else ""
        tp = "" if self.transport == "UDP" else f";transport={self.transport.lower()}"
        return f"sip:{at}{self.ip}:{self.port}{tp}"

    def display(self) -> str:
        return f'"{self.name}" ' if self.name else ""


@dataclass
class Site:
    """A PBX with its phones and the DIDs it gets from the trunk."""

    pbx: Node
    domain: str
    realm: str
    phones: list[Node]
    dids: list[str]


# --- rendering -------------------------------------------------------------------------------


def _render(sender: Node, start: str, headers: list[Header], body: str, response: bool) -> bytes:
    b = sender.brand
    rank = b.resp_rank if response else b.rank
    ordered = sorted(headers, key=lambda h: rank.get(h[0], 999))  # stable: Via order kept
    blob = body.encode()
    lines = [start]
    compact = _COMPACT if b.compact else None
    for name, value in ordered:
        lines.append(f"{compact.get(name, name) if compact else name}: {value}")
    cl_name = "l" if compact else "Content-Length"
    lines.append(f"{cl_name}:{b.cl_sep}{len(blob)}")
    return (CRLF.join(lines) + CRLF + CRLF).encode() + blob


def _label(kind: str, sender: Node, suffix: str) -> str:
    return kind + suffix + (" compact" if sender.brand.compact else "")


def _request(
    sender: Node,
    method: str,
    ruri: str,
    vias: Sequence[str],
    from_: str,
    to: str,
    call_id: str,
    cseq: int,
    extra: Sequence[Header] = (),
    body: str = "",
    *,
    max_forwards: int = 70,
    agent: bool = True,
    suffix: str = "",
) -> Labeled:
    headers: list[Header] = [("Via", v) for v in vias]
    headers += [
        ("Max-Forwards", str(max_forwards)),
        ("From", from_),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        *extra,
    ]
    if agent:
        headers.append(("User-Agent", sender.agent))
    if body:
        headers.append(("Content-Type", "application/sdp"))
        if sender.brand is FREESWITCH:
            headers.append(("Content-Disposition", "session"))
    msg = _render(sender, f"{method} {ruri} SIP/2.0", headers, body, response=False)
    return _label(method, sender, suffix), msg


def _response(
    sender: Node,
    code: int,
    vias: Sequence[str],
    from_: str,
    to: str,
    call_id: str,
    cseq: str,
    extra: Sequence[Header] = (),
    body: str = "",
    *,
    agent: bool = True,
    suffix: str = "",
) -> Labeled:
    headers: list[Header] = [("Via", v) for v in vias]
    headers += [("From", from_), ("To", to), ("Call-ID", call_id), ("CSeq", cseq), *extra]
    if agent:
        headers.append((sender.brand.resp_agent, sender.agent))
    if body:
        headers.append(("Content-Type", "application/sdp"))
    msg = _render(sender, f"SIP/2.0 {code} {REASONS[code]}", headers, body, response=True)
    return _label(f"{code} {cseq.split()[1]}", sender, suffix), msg


def _sdp(rng: Rng, node: Node) -> str:
    b = node.brand
    sess = rng.randrange(10**8, 10**10)
    port = rng.randrange(10000, 30000, 2)
    pts = " ".join(str(pt) for pt, _, _ in b.codecs)
    lines = [
        "v=0",
        f"o={b.sdp_user} {sess} {sess + rng.randint(0, 2)} IN IP4 {node.ip}",
        f"s={b.sdp_session}",
        f"c=IN IP4 {node.ip}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {pts}",
    ]
    for pt, rtpmap, fmtp in b.codecs:
        lines.append(f"a=rtpmap:{pt} {rtpmap}")
        if fmtp:
            lines.append(f"a=fmtp:{pt} {fmtp}")
    lines += b.sdp_attrs
    return CRLF.join(lines) + CRLF


def _supported(node: Node) -> list[Header]:
    b = node.brand
    out: list[Header] = []
    if b.allow:
        out.append(("Allow", b.allow))
    if b.supported:
        out.append(("Supported", b.supported))
    return out


# --- flows -----------------------------------------------------------------------------------


def _md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def _register(rng: Rng, site: Site, phone: Node) -> list[Labeled]:
    pbx, b = site.pbx, phone.brand
    call_id = b.call_id(rng, phone.ip)
    cseq = b.first_cseq(rng)
    aor = f"<sip:{phone.user}@{site.domain}>"
    frm = f"{phone.display()}{aor};tag={b.tag(rng)}"
    ruri = f"sip:{site.domain}"
    expires = rng.choice((120, 300, 600, 1800, 3600))
    contact = f"<{phone.contact_uri()}>"
    extra: list[Header] = (
        [("Contact", f"{contact};expires={expires}")]
        if b.expires_in_contact
        else [("Contact", contact), ("Expires", str(expires))]
    )
    extra += _supported(phone)
    if b is LINPHONE:
        extra.append(("Accept", "application/sdp"))
    out: list[Labeled] = []

    br1 = b.branch(rng)
    out.append(_request(phone, "REGISTER", ruri, [phone.via(br1)], frm, aor, call_id, cseq, extra))

    # 401 with the challenge
    sep = pbx.brand.auth_sep
    if pbx.brand is ASTERISK:
        nonce = f"{_BASE_TIME + rng.randrange(10**7)}/{_hex(rng, 32)}"
        opaque: str | None = _hex(rng, 16)
        totag = br1[7:] if rng.random() < 0.5 else pbx.brand.tag(rng)  # pjsip reuses branch
    else:
        nonce, opaque, totag = _uuid(rng), None, pbx.brand.tag(rng)
    chal = [f'realm="{site.realm}"', f'nonce="{nonce}"']
    if opaque:
        chal.append(f'opaque="{opaque}"')
    chal += ["algorithm=MD5", 'qop="auth"']
    out.append(
        _response(
            pbx,
            401,
            [phone.via(br1, True)],
            frm,
            f"{aor};tag={totag}",
            call_id,
            f"{cseq} REGISTER",
            [("WWW-Authenticate", "Digest " + sep.join(chal))],
        )
    )

    # retry with credentials (a real RFC 2617 qop=auth digest)
    cnonce, nc = _hex(rng, 16), "00000001"
    password = phone.password if rng.random() > 0.03 else "wrong-" + _hex(rng, 4)
    ha1 = _md5(f"{phone.user}:{site.realm}:{password}")
    ha2 = _md5(f"REGISTER:{ruri}")
    response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    cred = [
        f'username="{phone.user}"',
        f'realm="{site.realm}"',
        f'nonce="{nonce}"',
        f'uri="{ruri}"',
        f'response="{response}"',
        "algorithm=MD5",
        f'cnonce="{cnonce}"',
    ]
    if opaque:
        cred.append(f'opaque="{opaque}"')
    cred += ["qop=auth", f"nc={nc}"]
    br2 = b.branch(rng)
    auth_extra = [*extra, ("Authorization", "Digest " + b.auth_sep.join(cred))]
    out.append(
        _request(
            phone,
            "REGISTER",
            ruri,
            [phone.via(br2)],
            frm,
            aor,
            call_id,
            cseq + 1,
            auth_extra,
            suffix="+auth",
        )
    )

    to2 = f"{aor};tag={pbx.brand.tag(rng)}"
    cseq2 = f"{cseq + 1} REGISTER"
    if password != phone.password:
        out.append(_response(pbx, 403, [phone.via(br2, True)], frm, to2, call_id, cseq2))
        return out
    date = email.utils.formatdate(_BASE_TIME + rng.randrange(10**7), usegmt=True)
    ok_extra: list[Header] = [
        ("Contact", f"{contact};expires={expires - rng.randint(0, 1)}"),
        ("Date", date),
    ]
    if pbx.brand is ASTERISK:
        ok_extra.append(("Expires", str(expires)))
    out.append(_response(pbx, 200, [phone.via(br2, True)], frm, to2, call_id, cseq2, ok_extra))
    return out


def _options(rng: Rng, site: Site, phone: Node, sbc: Node) -> list[Labeled]:
    pbx = site.pbx
    r = rng.random()
    if r < 0.55:  # PBX qualify -> phone
        sender, receiver = pbx, phone
        ruri = phone.contact_uri()
        frm_uri = f"<sip:{'asterisk' if pbx.brand is ASTERISK else 'mod_sofia'}@{pbx.ip}>"
        to = f"<{ruri}>"
        contact = f"<sip:{pbx.ip}:{pbx.port}>"
    elif r < 0.80:  # phone keep-alive -> PBX
        sender, receiver = phone, pbx
        ruri = f"sip:{site.domain}"
        frm_uri = f"{phone.display()}<sip:{phone.user}@{site.domain}>"
        to = f"<{ruri}>"
        contact = f"<{phone.contact_uri()}>"
    else:  # SBC dispatcher ping -> PBX
        sender, receiver = sbc, pbx
        ruri = f"sip:{pbx.ip}:{pbx.port}"
        frm_uri = f"<sip:dispatcher@{sbc.ip}>"
        to = f"<{ruri}>"
        contact = ""
    sb = sender.brand
    call_id = sb.call_id(rng, sender.ip)
    cseq = sb.first_cseq(rng)
    frm = f"{frm_uri};tag={sb.tag(rng)}"
    br = sb.branch(rng)
    extra: list[Header] = [("Contact", contact)] if contact else []
    if sb is not KAMAILIO:
        extra.append(("Accept", "application/sdp"))
    req = _request(sender, "OPTIONS", ruri, [sender.via(br)], frm, to, call_id, cseq, extra)
    rextra: list[Header] = [*_supported(receiver), ("Accept", "application/sdp")]
    if receiver.brand is not ASTERISK:
        rextra.insert(0, ("Contact", f"<{receiver.contact_uri()}>"))
    resp = _response(
        receiver,
        200,
        [sender.via(br, True)],
        frm,
        f"{to};tag={receiver.brand.tag(rng)}",
        call_id,
        f"{cseq} OPTIONS",
        rextra,
    )
    return [req, resp]


@dataclass
class _Call:
    """The parameters of one INVITE dialog on one leg."""

    uac: Node
    uas: Node
    ruri: str
    from_uri: str
    to_uri: str
    uac_contact: str  # URI, no brackets
    uas_contact: str
    call_id: str
    ftag: str
    outcome: str | int  # "answer", "cancel" or a final failure status
    upstream: Callable[[], str] | None = None  # the second (lower) Via of trunk requests
    record_route: str | None = None
    invite_extra: list[Header] = field(default_factory=list)
    uac_agent: bool = True
    max_forwards: int = 70
    suffix: str = ""


def _call(rng: Rng, c: _Call) -> list[Labeled]:
    uac, uas, b, sfx = c.uac, c.uas, c.uac.brand, c.suffix
    out: list[Labeled] = []
    cseq = b.first_cseq(rng)
    inv_cseq = f"{cseq} INVITE"
    frm = f"{c.from_uri};tag={c.ftag}"
    to0, to1 = c.to_uri, f"{c.to_uri};tag={uas.brand.tag(rng)}"
    rr: list[Header] = [("Record-Route", c.record_route)] if c.record_route else []
    route: list[Header] = [("Route", c.record_route)] if c.record_route else []
    mf = c.max_forwards

    def vias(branch: str, filled: bool = False, up: str | None = None) -> list[str]:
        return [uac.via(branch, filled)] + ([up] if up else [])

    up = c.upstream() if c.upstream else None
    br = b.branch(rng)
    inv_extra: list[Header] = [("Contact", f"<{c.uac_contact}>"), *_supported(uac), *rr]
    inv_extra += c.invite_extra
    out.append(
        _request(
            uac,
            "INVITE",
            c.ruri,
            vias(br, False, up),
            frm,
            to0,
            c.call_id,
            cseq,
            inv_extra,
            _sdp(rng, uac),
            max_forwards=mf,
            agent=c.uac_agent,
            suffix=sfx,
        )
    )
    resp_vias = vias(br, True, up)
    out.append(
        _response(
            uas,
            100,
            resp_vias,
            frm,
            to0,
            c.call_id,
            inv_cseq,
            agent=uas.brand.agent_on_100,
            suffix=sfx,
        )
    )
    ring = c.outcome in ("answer", "cancel") or (c.outcome in (480, 486) and rng.random() < 0.5)
    uas_contact = [("Contact", f"<{c.uas_contact}>")]
    if ring:
        out.append(
            _response(
                uas, 180, resp_vias, frm, to1, c.call_id, inv_cseq, [*rr, *uas_contact], suffix=sfx
            )
        )

    if c.outcome == "answer":
        ok_extra: list[Header] = [*rr, *uas_contact, *_supported(uas)]
        if c.record_route:  # trunk: session timer negotiated
            ok_extra += [("Session-Expires", "1800;refresher=uac"), ("Require", "timer")]
        out.append(
            _response(
                uas,
                200,
                resp_vias,
                frm,
                to1,
                c.call_id,
                inv_cseq,
                ok_extra,
                _sdp(rng, uas),
                suffix=sfx,
            )
        )
        up2 = c.upstream() if c.upstream else None
        out.append(
            _request(
                uac,
                "ACK",
                c.uas_contact,
                vias(b.branch(rng), False, up2),
                frm,
                to1,
                c.call_id,
                cseq,
                max_forwards=mf,
                agent=c.uac_agent and b.agent_on_ack,
                suffix=sfx,
            )
        )
        if rng.random() < 0.55:  # caller hangs up
            up3 = c.upstream() if c.upstream else None
            brb = b.branch(rng)
            out.append(
                _request(
                    uac,
                    "BYE",
                    c.uas_contact,
                    vias(brb, False, up3),
                    frm,
                    to1,
                    c.call_id,
                    cseq + 1,
                    max_forwards=mf,
                    agent=c.uac_agent,
                    suffix=sfx,
                )
            )
            out.append(
                _response(
                    uas,
                    200,
                    vias(brb, True, up3),
                    frm,
                    to1,
                    c.call_id,
                    f"{cseq + 1} BYE",
                    suffix=sfx,
                )
            )
        else:  # callee hangs up: roles and tags swap
            ub = uas.brand
            c2 = ub.first_cseq(rng)
            brb = ub.branch(rng)
            out.append(
                _request(
                    uas,
                    "BYE",
                    c.uac_contact,
                    [uas.via(brb)],
                    to1,
                    frm,
                    c.call_id,
                    c2,
                    route,
                    suffix=sfx,
                )
            )
            out.append(
                _response(
                    uac,
                    200,
                    [uas.via(brb, True)],
                    to1,
                    frm,
                    c.call_id,
                    f"{c2} BYE",
                    agent=c.uac_agent,
                    suffix=sfx,
                )
            )
    elif c.outcome == "cancel":
        req_vias = vias(br, False, up)
        out.append(
            _request(
                uac,
                "CANCEL",
                c.ruri,
                req_vias,
                frm,
                to0,
                c.call_id,
                cseq,
                max_forwards=mf,
                agent=c.uac_agent,
                suffix=sfx,
            )
        )
        out.append(
            _response(uas, 200, resp_vias, frm, to1, c.call_id, f"{cseq} CANCEL", suffix=sfx)
        )
        out.append(_response(uas, 487, resp_vias, frm, to1, c.call_id, inv_cseq, suffix=sfx))
        out.append(
            _request(
                uac,
                "ACK",
                c.ruri,
                req_vias,
                frm,
                to1,
                c.call_id,
                cseq,
                max_forwards=mf,
                agent=c.uac_agent and b.agent_on_ack,
                suffix=sfx,
            )
        )
    else:
        code = int(c.outcome)
        fextra: list[Header] = []
        if code in (480, 503):
            fextra.append(("Retry-After", str(rng.choice((30, 60, 300)))))
        if code == 603 or (code == 403 and rng.random() < 0.5):
            fextra.append(("Reason", f'SIP;cause={code};text="{REASONS[code]}"'))
        out.append(
            _response(uas, code, resp_vias, frm, to1, c.call_id, inv_cseq, fextra, suffix=sfx)
        )
        out.append(
            _request(
                uac,
                "ACK",
                c.ruri,
                vias(br, False, up),
                frm,
                to1,
                c.call_id,
                cseq,
                max_forwards=mf,
                agent=c.uac_agent and b.agent_on_ack,
                suffix=sfx,
            )
        )
    return out


def _outcome(rng: Rng, failures: Sequence[int]) -> str | int:
    r = rng.random()
    if r < 0.62:
        return "answer"
    if r < 0.74:
        return "cancel"
    return rng.choice(failures)


def _e164(rng: Rng) -> str:
    r = rng.random()
    if r < 0.4:
        return f"+1{rng.choice(('202', '312', '415', '617', '702'))}55501{rng.randrange(100):02d}"
    if r < 0.7:
        return f"+442079460{rng.randrange(1000):03d}"
    if r < 0.85:
        return f"+6125550{rng.randrange(10000):04d}"
    return f"+3319900{rng.randrange(10000):04d}"


def _phone_call(rng: Rng, site: Site, phone: Node) -> list[Labeled]:
    """A phone calls an extension or an outside number through its PBX."""
    pbx = site.pbx
    if rng.random() < 0.5:
        target = rng.choice(site.phones).user
        to_uri = f"<sip:{target}@{site.domain}>"
    else:
        target = _e164(rng)
        if rng.random() < 0.5:
            target = "00" + target[1:] if target.startswith("+44") else target
        to_uri = f"<sip:{target}@{site.domain}>"
    ruri = f"sip:{target}@{site.domain}"
    call = _Call(
        uac=phone,
        uas=pbx,
        ruri=ruri,
        from_uri=f"{phone.display()}<sip:{phone.user}@{site.domain}>",
        to_uri=to_uri,
        uac_contact=phone.contact_uri(),
        uas_contact=pbx.contact_uri(target),
        call_id=phone.brand.call_id(rng, phone.ip),
        ftag=phone.brand.tag(rng),
        outcome=_outcome(rng, (403, 404, 480, 486, 503)),
    )
    return _call(rng, call)


def _inbound_call(rng: Rng, site: Site, phone: Node) -> list[Labeled]:
    """The PBX rings a phone (a call from outside or from another extension)."""
    pbx = site.pbx
    caller = _e164(rng) if rng.random() < 0.6 else rng.choice(site.phones).user
    name = f'"{caller}" ' if caller.startswith("+") and rng.random() < 0.5 else ""
    call = _Call(
        uac=pbx,
        uas=phone,
        ruri=phone.contact_uri(),
        from_uri=f"{name}<sip:{caller}@{site.domain}>",
        to_uri=f"<sip:{phone.user}@{phone.ip}:{phone.port}>",
        uac_contact=pbx.contact_uri(caller),
        uas_contact=phone.contact_uri(),
        call_id=pbx.brand.call_id(rng, pbx.ip),
        ftag=pbx.brand.tag(rng),
        outcome=_outcome(rng, (480, 486, 603)),
    )
    return _call(rng, call)


def _trunk_call(rng: Rng, site: Site, sbc: Node, carrier_ip: str) -> list[Labeled]:
    """A carrier call to a DID arrives through the Kamailio SBC (two Vias, Record-Route)."""
    pbx = site.pbx
    caller = _e164(rng)
    did = rng.choice(site.dids)

    def upstream() -> str:
        return f"SIP/2.0/UDP {carrier_ip}:5060;branch=z9hG4bK{_uhex(rng, 12)};rport=5060"

    rr = f"<sip:{sbc.ip};lr;ftag={_hex(rng, 8)};did={_hex(rng, 3)}.{_hex(rng, 4)}>"
    call = _Call(
        uac=sbc,
        uas=pbx,
        ruri=f"sip:{did}@{pbx.ip}:{pbx.port};user=phone",
        from_uri=f'"{caller}" <sip:{caller}@{carrier_ip};user=phone>',
        to_uri=f"<sip:{did}@carrier.example.net;user=phone>",
        uac_contact=f"sip:{caller}@{carrier_ip}:5060;transport=udp",
        uas_contact=pbx.contact_uri(did),
        call_id=f"{_uhex(rng, 8)}-{_uhex(rng, 8)}-{_uhex(rng, 8)}@{carrier_ip}",
        ftag=f"gK{_hex(rng, 8)}",
        outcome=_outcome(rng, (403, 404, 480, 486, 503)),
        upstream=upstream,
        record_route=rr,
        invite_extra=[
            ("P-Asserted-Identity", f"<sip:{caller}@carrier.example.net;user=phone>"),
            ("Session-Expires", "1800;refresher=uac"),
            ("Min-SE", "90"),
        ],
        uac_agent=rng.random() < 0.5,
        max_forwards=69,
        suffix=" trunk",
    )
    return _call(rng, call)


# --- the network -----------------------------------------------------------------------------


def _build_sites(rng: Rng) -> tuple[list[Site], list[Node], list[str]]:
    hosts = iter(
        rng.sample(
            [f"192.0.2.{i}" for i in range(2, 255)] + [f"198.51.100.{i}" for i in range(30, 200)],
            k=420,
        )
    )
    sites: list[Site] = []
    for i in range(6):
        brand = ASTERISK if i % 3 != 2 else FREESWITCH
        ip = f"203.0.113.{10 + i}"
        pbx = Node(brand, rng.choice(brand.agents), ip)
        domain = ip if brand is ASTERISK and i % 2 else f"pbx{i + 1}.example.com"
        realm = "asterisk" if brand is ASTERISK else domain
        base = rng.choice((100, 200, 1000, 2000, 4000))
        phones: list[Node] = []
        for ext in rng.sample(range(base, base + (900 if base < 1000 else 999)), k=60):
            pb = rng.choices(_PHONE_BRANDS, _PHONE_WEIGHTS)[0]
            soft = pb in (ZOIPER, LINPHONE, PJSUA)
            transport = rng.choices(("UDP", "TCP", "TLS"), (80, 12, 8) if soft else (95, 5, 0))[0]
            if transport == "TLS":
                port = 5061
            elif soft:
                port = rng.randrange(40000, 65000)
            else:
                port = rng.choice((5060, 5060, 5062))
            name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" if rng.random() < 0.7 else ""
            phones.append(
                Node(
                    pb,
                    rng.choice(pb.agents),
                    next(hosts),
                    port,
                    transport,
                    str(ext),
                    name,
                    _alnum(rng, 12),
                )
            )
        dids = [_e164(rng) for _ in range(10)]
        sites.append(Site(pbx, domain, realm, phones, dids))
    sbcs = [Node(KAMAILIO, KAMAILIO.agents[i % 2], f"198.51.100.{210 + i}") for i in range(2)]
    carriers = [f"198.51.100.{20 + i}" for i in range(4)]
    return sites, sbcs, carriers


_FLOWS = ("register", "options", "phone_call", "inbound_call", "trunk_call")
_FLOW_WEIGHTS = (22, 30, 22, 11, 15)


#: Flows in progress at once: their messages interleave as they would on the wire.
DEFAULT_CONCURRENCY = 64


def _flow(rng: Rng, sites: list[Site], sbcs: list[Node], carriers: list[str]) -> list[Labeled]:
    flow = rng.choices(_FLOWS, _FLOW_WEIGHTS)[0]
    site = rng.choice(sites)
    phone = rng.choice(site.phones)
    if flow == "register":
        return _register(rng, site, phone)
    if flow == "options":
        return _options(rng, site, phone, rng.choice(sbcs))
    if flow == "phone_call":
        return _phone_call(rng, site, phone)
    if flow == "inbound_call":
        return _inbound_call(rng, site, phone)
    return _trunk_call(rng, site, rng.choice(sbcs), rng.choice(carriers))


def generate_labeled(
    n: int = DEFAULT_MESSAGES, seed: int = 1, concurrency: int = DEFAULT_CONCURRENCY
) -> list[Labeled]:
    """Return ``n`` (kind label, message) pairs, deterministic for a given ``seed``.

    ``concurrency`` flows run at once: each next message comes from a randomly chosen flow in
    progress, and a finished flow is replaced by a new one, so the messages of one dialog are
    spread out as on a real link (1 gives each flow's messages back to back).
    """
    if n < 0 or concurrency < 1:
        raise ValueError("n must be >= 0 and concurrency >= 1")
    rng = random.Random(seed)
    sites, sbcs, carriers = _build_sites(rng)
    active: list[tuple[list[Labeled], list[int]]] = []  # (messages, [next index])
    out: list[Labeled] = []
    while len(out) < n:
        while len(active) < concurrency:
            active.append((_flow(rng, sites, sbcs, carriers), [0]))
        i = rng.randrange(len(active))
        msgs, pos = active[i]
        out.append(msgs[pos[0]])
        pos[0] += 1
        if pos[0] == len(msgs):
            active[i] = active[-1]
            active.pop()
    return out


def generate(
    n: int = DEFAULT_MESSAGES, seed: int = 1, concurrency: int = DEFAULT_CONCURRENCY
) -> list[bytes]:
    """Return ``n`` SIP messages (bytes, CRLF), deterministic for a given ``seed``."""
    return [msg for _, msg in generate_labeled(n, seed, concurrency)]


if __name__ == "__main__":  # print a few messages: python bench/corpus.py [N] [SEED]
    import sys

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    for kind, message in generate_labeled(count, int(sys.argv[2]) if len(sys.argv) > 2 else 1):
        print(f"----- {kind}")
        print(message.decode().replace("\r\n", "\n"))
