"""Generate the pcaps for ``bench/analyze.py``: realistic traffic with attacks, and a hostile
keyspace.

``write_realistic(path, n, seed)`` writes exactly ``n`` SIP messages as a classic pcap
(Ethernet / IPv4 / UDP, TCP for the phones that use TCP or TLS - TLS is written as clear TCP so
that both tools can read it): the benign flows of ``bench/corpus.py`` (registrations with digest
auth, OPTIONS keep-alives, calls with SDP, CANCELs, failures, SBC trunk calls) with
flows starting as a Poisson process, each flow's messages spaced as people and stacks
space them (ringing 2-20 s before an answer, calls of a median 90 s, CANCEL after 8-30 s of
ringing), from Wednesday 08:00 UTC on, plus ``attack_share`` (default 3 %) of attack
messages in bursts ("campaigns") at random times:

* ``scan``: SIPVicious svmap OPTIONS sweep of a /24 (User-Agent ``friendly-scanner``, the PBXs
  answer 200), then svwar REGISTER enumeration of extensions (404 / 401 answers);
* ``bruteforce``: svcrack-style REGISTER digest guessing for one extension (401, then 403);
* ``flood``: an INVITE flood from one source to one PBX number (401 answers);
* ``toll_fraud``: a foreign source dialling premium / international numbers, the same number
  tried as ``+``, ``00``, ``011`` and ``9011`` (prefix walking), some calls answered.

``write_hostile(path, n, seed)`` writes ``n`` REGISTER / INVITE requests, each from a distinct
spoofed source IPv4 address, user and Call-ID, at 10,000 msgs/s, with no answers: the key
space an attacker controls, to show that state stays bounded.

Everything is deterministic for a given ``(n, seed)``: one seeded :class:`random.Random`.
The benign messages are made by ``corpus``'s own flow builders; to learn who sends each message
(corpus returns bytes only) the builders' ``_request`` / ``_response`` are wrapped while a flow
is built, and the receiver is the flow's other party.

``python bench/gen_pcap.py realistic|hostile OUT.pcap [--messages N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import corpus  # noqa: E402

__all__ = ["GENERATOR_VERSION", "GenSummary", "PcapWriter", "write_hostile", "write_realistic"]

#: Part of cached file names (bench/analyze.py): bump when the output for a given (n, seed)
#: changes, so that stale captures are not reused.
GENERATOR_VERSION = 2

_BASE_TS = 1_700_035_200.0  # Wednesday 2023-11-15 08:00 UTC: business hours
_MAC_A = bytes.fromhex("020000000001")
_MAC_B = bytes.fromhex("020000000002")
_ETH_IPV4 = b"\x08\x00"
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIBBHHH")
_REC = struct.Struct("<IIII")

#: (ip, port) of one side.
Addr = tuple[str, int]


@dataclass
class GenSummary:
    """What was written: message counts by origin and attack kind, span of packet time."""

    messages: int = 0
    benign: int = 0
    attack: dict[str, int] = field(default_factory=dict)
    tcp: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    distinct_sources: int = 0


def _ip_bytes(ip: str, cache: dict[str, bytes] = {}) -> bytes:  # noqa: B006 - a cache
    raw = cache.get(ip)
    if raw is None:
        raw = bytes(int(p) for p in ip.split("."))
        if len(cache) < 100_000:
            cache[ip] = raw
    return raw


def _checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class PcapWriter:
    """Classic pcap (little-endian, µs), link type Ethernet; IPv4 with UDP or TCP."""

    def __init__(self, handle: BinaryIO) -> None:
        self._out = handle
        self._ip_id = 0
        self._seq: dict[tuple[Addr, Addr], int] = {}
        handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))

    def write(self, ts: float, src: Addr, dst: Addr, tcp: bool, payload: bytes) -> None:
        sip, sport = src
        dip, dport = dst
        if tcp:
            # One segment per message, PSH|ACK, sequence numbers continuous per direction
            # (no handshake: the capture starts with the connections already up).
            key = (src, dst)
            seq = self._seq.get(key, 1000)
            self._seq[key] = (seq + len(payload)) & 0xFFFFFFFF
            l4 = _TCP.pack(sport, dport, seq, 1, 5 << 4, 0x18, 65535, 0, 0)
            proto = 6
        else:
            l4 = _UDP.pack(sport, dport, 8 + len(payload), 0)
            proto = 17
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        total = 20 + len(l4) + len(payload)
        s, d = _ip_bytes(sip), _ip_bytes(dip)
        head = _IPV4.pack(0x45, 0, total, self._ip_id, 0x4000, 64, proto, 0, s, d)
        head = head[:10] + struct.pack("!H", _checksum(head)) + head[12:]
        frame = _MAC_B + _MAC_A + _ETH_IPV4 + head + l4 + payload
        sec = int(ts)
        usec = round((ts - sec) * 1e6)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        self._out.write(_REC.pack(sec, usec, len(frame), len(frame)))
        self._out.write(frame)


# --- benign traffic from corpus.py ------------------------------------------------------------

#: (src, dst, tcp, message)
Packet = tuple[Addr, Addr, bool, bytes]


@contextmanager
def _recording_senders(senders: list[Any]) -> Iterator[None]:
    """Wrap corpus's message builders so that each message's sender Node is recorded."""
    orig_req, orig_resp = corpus._request, corpus._response

    def request(sender: Any, *args: Any, **kwargs: Any) -> Any:
        senders.append(sender)
        return orig_req(sender, *args, **kwargs)

    def response(sender: Any, *args: Any, **kwargs: Any) -> Any:
        senders.append(sender)
        return orig_resp(sender, *args, **kwargs)

    corpus._request, corpus._response = request, response
    try:
        yield
    finally:
        corpus._request, corpus._response = orig_req, orig_resp


def _benign_flow(rng: random.Random, world: tuple[Any, Any, Any]) -> list[tuple[str, Packet]]:
    """One corpus flow as (kind label, packet) in the order it happens."""
    senders: list[Any] = []
    with _recording_senders(senders):
        labeled = corpus._flow(rng, *world)
    if len(senders) != len(labeled):
        raise RuntimeError("corpus flow builders changed: sender bookkeeping is off")
    parties = list({id(node): node for node in senders}.values())  # Nodes are not hashable
    tcp = any(p.transport != "UDP" for p in parties)
    out: list[tuple[str, Packet]] = []
    for sender, (label, msg) in zip(senders, labeled, strict=True):
        receiver = parties[1] if sender is parties[0] else parties[0]
        out.append((label, ((sender.ip, sender.port), (receiver.ip, receiver.port), tcp, msg)))
    return out


def _delay(rng: random.Random, label: str, prev: str) -> float:
    """Seconds between the previous message of a flow and this one, by message kind: what
    people and stacks take (ringing, talking, giving up), not what a parser would like."""
    head, _, rest = label.partition(" ")
    if head.isdigit():
        code, method = int(head), rest.split(" ", 1)[0]
        if code == 100:
            return rng.uniform(0.005, 0.05)
        if code == 180:
            return rng.uniform(0.05, 0.5)
        if method != "INVITE" or code == 487:
            return rng.uniform(0.005, 0.1)
        if code == 200:
            return rng.uniform(2.0, 20.0)  # answered after ringing
        if code in (480, 486, 603) and prev.startswith("180"):
            return rng.uniform(2.0, 30.0)  # no answer / declined after ringing
        return rng.uniform(0.02, 0.5)
    if head == "BYE":  # call length: median 90 s, a long tail, at most an hour
        return min(3600.0, rng.lognormvariate(math.log(90.0), 1.0))
    if head == "CANCEL":
        return rng.uniform(8.0, 30.0)  # the caller gives up after some rings
    if head == "ACK":
        return rng.uniform(0.01, 0.1)
    return rng.uniform(0.02, 0.2)  # REGISTER with credentials after the 401, and the rest


#: Average messages per corpus flow (REGISTER 4, OPTIONS 2, calls 4-7 by outcome), to start flows
#: at the rate that gives about ``rate`` messages per second.
_MESSAGES_PER_FLOW = 4.6


def _benign(rng: random.Random, n: int, rate: float) -> Iterator[tuple[float, Packet]]:
    """``n`` benign packets: corpus flows starting as a Poisson process (about ``rate`` msgs/s
    in all), each flow's messages spaced by :func:`_delay`, all flows merged in time order."""
    world = corpus._build_sites(rng)
    pending: list[tuple[float, int, Packet]] = []
    seq = 0
    next_start = _BASE_TS
    flow_rate = rate / _MESSAGES_PER_FLOW
    for _ in range(n):
        while not pending or next_start <= pending[0][0]:
            ts, prev = next_start, ""
            for i, (label, packet) in enumerate(_benign_flow(rng, world)):
                if i:
                    ts += _delay(rng, label, prev)
                heapq.heappush(pending, (ts, seq, packet))
                seq += 1
                prev = label
            next_start += rng.expovariate(flow_rate)
        ts, _, packet = heapq.heappop(pending)
        yield ts, packet


# --- attack traffic ---------------------------------------------------------------------------


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _message(start: str, headers: list[tuple[str, str]], body: str = "") -> bytes:
    lines = [start, *(f"{k}: {v}" for k, v in headers), f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body.encode()


def _request(
    method: str,
    ruri: str,
    src: Addr,
    from_uri: str,
    to_uri: str,
    call_id: str,
    cseq: int,
    rng: random.Random,
    ua: str | None,
    extra: list[tuple[str, str]] | None = None,
    body: str = "",
    branch: str | None = None,
) -> bytes:
    br = branch or "z9hG4bK" + _hex(rng, 16)
    user_part = from_uri.split(":", 1)[1].partition("@")[0]
    headers = [
        ("Via", f"SIP/2.0/UDP {src[0]}:{src[1]};branch={br};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<{from_uri}>;tag={_hex(rng, 8)}"),
        ("To", f"<{to_uri}>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", f"<sip:{user_part}@{src[0]}:{src[1]}>"),
    ]
    if ua:
        headers.append(("User-Agent", ua))
    headers += extra or []
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return _message(f"{method} {ruri} SIP/2.0", headers, body)


def _response(
    request: bytes, code: int, reason: str, server: str, extra: list[tuple[str, str]] | None = None
) -> bytes:
    """A response that copies Via/From/To/Call-ID/CSeq from ``request`` (adds a To tag)."""
    copied: list[tuple[str, str]] = []
    for line in request.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]:
        name, _, value = line.partition(": ")
        if name == "To" and code > 100:
            value += ";tag=" + format(hash((value, code)) & 0xFFFFFFFF, "08x")
        if name in ("Via", "From", "To", "Call-ID", "CSeq"):
            copied.append((name, value))
    return _message(f"SIP/2.0 {code} {reason}", [*copied, ("Server", server), *(extra or [])])


_PBX = [(f"203.0.113.{10 + i}", 5060) for i in range(6)]
_SERVER = "Asterisk PBX 20.5.2"


def _challenge(rng: random.Random, header: str = "WWW-Authenticate") -> tuple[str, str]:
    return (header, f'Digest realm="asterisk",nonce="{_hex(rng, 32)}",algorithm=MD5,qop="auth"')


def _sdp(ip: str, rng: random.Random) -> str:
    sess = rng.randrange(10**8, 10**10)
    return (
        f"v=0\r\no=- {sess} {sess} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {rng.randrange(10000, 30000, 2)} RTP/AVP 0 8 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=sendrecv\r\n"
    )


def _attacker_ip(rng: random.Random) -> str:
    return f"198.18.{rng.randrange(256)}.{rng.randrange(1, 255)}"  # RFC 2544 benchmark range


def _scan(rng: random.Random, budget: int) -> Iterator[tuple[Packet, float]]:
    """svmap OPTIONS sweep of 203.0.113.0/24, then svwar REGISTER extension enumeration."""
    src = (_attacker_ip(rng), 5060)
    ua = "friendly-scanner"
    made = 0
    for host in range(1, 255):
        dst = (f"203.0.113.{host}", 5060)
        req = _request(
            "OPTIONS",
            f"sip:100@{dst[0]}",
            src,
            f"sip:100@{src[0]}",
            f"sip:100@{dst[0]}",
            _hex(rng, 32),
            1,
            rng,
            ua,
        )
        yield (src, dst, False, req), 0.01
        made += 1
        if dst in _PBX:
            yield (dst, src, False, _response(req, 200, "OK", _SERVER)), 0.001
            made += 1
        if made >= budget // 3:
            break
    pbx = rng.choice(_PBX)
    ext = 100
    while made < budget:
        user = str(ext)
        req = _request(
            "REGISTER",
            f"sip:{pbx[0]}",
            src,
            f"sip:{user}@{pbx[0]}",
            f"sip:{user}@{pbx[0]}",
            _hex(rng, 32),
            1,
            rng,
            ua,
        )
        yield (src, pbx, False, req), 0.02
        exists = ext % 50 == 0
        resp = (
            _response(req, 401, "Unauthorized", _SERVER, [_challenge(rng)])
            if exists
            else _response(req, 404, "Not Found", _SERVER)
        )
        yield (pbx, src, False, resp), 0.001
        made += 2
        ext += 1


def _bruteforce(rng: random.Random, budget: int) -> Iterator[tuple[Packet, float]]:
    """svcrack: REGISTER -> 401 -> REGISTER with a guessed digest -> 403, for one extension."""
    src = (_attacker_ip(rng), 5060)
    pbx = rng.choice(_PBX)
    user = str(rng.randrange(100, 999))
    made, cseq = 0, 1
    call_id = _hex(rng, 32)
    while made < budget:
        uri = f"sip:{user}@{pbx[0]}"
        req = _request("REGISTER", f"sip:{pbx[0]}", src, uri, uri, call_id, cseq, rng, None)
        yield (src, pbx, False, req), 0.01
        yield (
            (pbx, src, False, _response(req, 401, "Unauthorized", _SERVER, [_challenge(rng)])),
            0.001,
        )
        auth = (
            "Authorization",
            f'Digest username="{user}",realm="asterisk",nonce="{_hex(rng, 32)}",'
            f'uri="sip:{pbx[0]}",response="{_hex(rng, 32)}",algorithm=MD5',
        )
        req2 = _request(
            "REGISTER", f"sip:{pbx[0]}", src, uri, uri, call_id, cseq + 1, rng, None, [auth]
        )
        yield (src, pbx, False, req2), 0.005
        yield (pbx, src, False, _response(req2, 403, "Forbidden", _SERVER)), 0.001
        made += 4
        cseq += 2


def _flood(rng: random.Random, budget: int) -> Iterator[tuple[Packet, float]]:
    """An INVITE flood (sipp-like) from one source to one number at one PBX, 401 answers."""
    src = (_attacker_ip(rng), 5060)
    pbx = rng.choice(_PBX)
    callee = f"sip:{rng.randrange(100, 999)}@{pbx[0]}"
    made = 0
    while made < budget:
        req = _request(
            "INVITE",
            callee,
            src,
            f"sip:sipp@{src[0]}",
            callee,
            f"{made}-{_hex(rng, 8)}@{src[0]}",
            1,
            rng,
            "sipp",
            body=_sdp(src[0], rng),
        )
        yield (src, pbx, False, req), 0.003
        yield (
            (pbx, src, False, _response(req, 401, "Unauthorized", _SERVER, [_challenge(rng)])),
            0.0005,
        )
        made += 2


_FRAUD_NUMBERS = ("88213", "88237", "2392", "5327", "37167", "8823", "22578", "6753")


def _toll_fraud(rng: random.Random, budget: int) -> Iterator[tuple[Packet, float]]:
    """Premium / satellite destinations from a foreign source with a stolen extension; the same
    number tried as ``+``, ``00``, ``011`` and ``9011``; every fourth call connects."""
    src = (_attacker_ip(rng), 5060)
    pbx = rng.choice(_PBX)
    user = str(rng.randrange(100, 999))
    made = 0
    n = 0
    while made < budget:
        number = rng.choice(_FRAUD_NUMBERS) + str(rng.randrange(10**6, 10**7))
        for prefix in ("+", "00", "011", "9011"):
            ruri = f"sip:{prefix}{number}@{pbx[0]}"
            cid = _hex(rng, 32)
            req = _request(
                "INVITE",
                ruri,
                src,
                f"sip:{user}@{pbx[0]}",
                ruri,
                cid,
                1,
                rng,
                "Zoiper rv2.10",
                body=_sdp(src[0], rng),
            )
            yield (src, pbx, False, req), 0.2
            yield (pbx, src, False, _response(req, 100, "Trying", _SERVER)), 0.01
            made += 2
            n += 1
            if n % 4:
                yield (pbx, src, False, _response(req, 404, "Not Found", _SERVER)), 0.05
                made += 1
                continue
            yield (pbx, src, False, _response(req, 180, "Ringing", _SERVER)), 0.5
            yield (pbx, src, False, _response(req, 200, "OK", _SERVER)), 2.0
            ack = _request("ACK", ruri, src, f"sip:{user}@{pbx[0]}", ruri, cid, 1, rng, None)
            yield (src, pbx, False, ack), 0.05
            made += 3
            break


_CAMPAIGNS: dict[str, Callable[[random.Random, int], Iterator[tuple[Packet, float]]]] = {
    "scan": _scan,
    "bruteforce": _bruteforce,
    "flood": _flood,
    "toll_fraud": _toll_fraud,
}


def _attacks(
    rng: random.Random, n_attack: int, span: float, summary: GenSummary
) -> list[tuple[float, Packet]]:
    """Attack packets with their times: campaigns of <= 2,500 messages, kinds in turn."""
    out: list[tuple[float, Packet]] = []
    if n_attack <= 0:
        return out
    n_campaigns = max(len(_CAMPAIGNS), n_attack // 2_500)
    kinds = list(_CAMPAIGNS)
    left = n_attack
    for c in range(n_campaigns):
        budget = left // (n_campaigns - c)
        kind = kinds[c % len(kinds)]
        ts = _BASE_TS + rng.uniform(0.05, 0.85) * span
        made = 0
        for packet, gap in _CAMPAIGNS[kind](rng, budget):
            if made >= budget:
                break
            out.append((ts, packet))
            ts += gap
            made += 1
        left -= made
        summary.attack[kind] = summary.attack.get(kind, 0) + made
    out.sort(key=lambda item: item[0])
    return out


def write_realistic(
    path: Path, n: int, seed: int = 1, attack_share: float = 0.03, rate: float = 50.0
) -> GenSummary:
    """Write ``n`` messages: benign corpus flows at ``rate`` msgs/s plus attack campaigns."""
    rng = random.Random(seed)
    summary = GenSummary()
    n_attack = round(n * attack_share)
    attacks = _attacks(random.Random(seed + 1), n_attack, (n - n_attack) / rate, summary)
    n_benign = n - len(attacks)
    sources: set[str] = set()
    with path.open("wb") as handle:
        writer = PcapWriter(handle)
        merged = heapq.merge(_benign(rng, n_benign, rate), attacks, key=lambda item: item[0])
        for ts, (src, dst, tcp, msg) in merged:
            writer.write(ts, src, dst, tcp, msg)
            if not summary.messages:
                summary.first_ts = ts
            summary.messages += 1
            summary.tcp += tcp
            summary.last_ts = ts
            sources.add(src[0])
    summary.benign = n_benign
    summary.distinct_sources = len(sources)
    return summary


def write_hostile(path: Path, n: int, seed: int = 1, rate: float = 10_000.0) -> GenSummary:
    """``n`` requests, each from its own spoofed source (10.0.0.0/8 and up), user and Call-ID."""
    rng = random.Random(seed)
    summary = GenSummary()
    ts = _BASE_TS
    with path.open("wb") as handle:
        writer = PcapWriter(handle)
        for i in range(n):
            # An odd multiplier permutes 2**26 values: distinct and scattered sources.
            v = (i * 2_654_435_761) % (1 << 26)
            ip = f"{10 + (v >> 24)}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"
            src = (ip, rng.randrange(1024, 65535))
            pbx = _PBX[i % len(_PBX)]
            user = f"u{_hex(rng, 10)}"
            if i % 2:
                ruri = f"sip:{rng.randrange(10**9, 10**10)}@{pbx[0]}"
                msg = _request(
                    "INVITE",
                    ruri,
                    src,
                    f"sip:{user}@{pbx[0]}",
                    ruri,
                    _hex(rng, 24),
                    1,
                    rng,
                    f"agent-{_hex(rng, 6)}",
                )
            else:
                uri = f"sip:{user}@{pbx[0]}"
                msg = _request(
                    "REGISTER",
                    f"sip:{pbx[0]}",
                    src,
                    uri,
                    uri,
                    _hex(rng, 24),
                    1,
                    rng,
                    f"agent-{_hex(rng, 6)}",
                )
            writer.write(ts, src, pbx, False, msg)
            ts += 1.0 / rate
        summary.messages = n
        summary.attack["spoofed"] = n
        summary.distinct_sources = n
        summary.first_ts, summary.last_ts = _BASE_TS, ts
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("realistic", "hostile"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    write = write_realistic if args.kind == "realistic" else write_hostile
    print(write(args.out, args.messages, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
