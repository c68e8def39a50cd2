"""Pure packet decoding: link layer → IP → UDP/TCP, and SIP payloads out of them.

Theory of operation
-------------------
:class:`FrameDecoder` turns one captured link-layer frame into a :class:`Datagram` (UDP), a
:class:`Segment` (TCP) or a :class:`Skipped` with a :class:`SkipReason`. It never raises on
hostile bytes: short buffers become ``TRUNCATED``, impossible header values ``MALFORMED``.

* Link types: Ethernet (1, with any number of 802.1Q / 802.1ad / QinQ tags), Linux SLL (113),
  Linux SLL2 (276), raw IP (101, 12, 14, 228, 229), BSD NULL (0, either byte order) and LOOP
  (108).
* IPv4 and IPv6. IPv6 hop-by-hop, routing, destination-options and AH headers are skipped; the
  fragment header is a fragment. Fragments of both versions are reassembled in a bounded table
  (:class:`FragmentTable`): at most ``max_datagrams`` datagrams in progress, each expiring
  ``timeout_s`` of *packet* time after its first fragment; evictions, expiries and bad fragments
  are counted.
* SCTP (RFC 4168 SIP over SCTP): DATA chunks of every packet; the extractor joins a user
  message's fragments per stream.
* One tunnel layer is removed: IP-in-IP (protocol 4 / 41) and GRE (47) carrying IPv4, IPv6,
  Ethernet (transparent bridging) or, in PPTP's enhanced GRE, PPP.

:class:`SipExtractor` sits on top: UDP payloads that begin with a SIP start line (on any port)
are SIP messages; each TCP direction with SIP in it is framed by
:class:`~sipwarden.sip.StreamFramer`, or, after a WebSocket upgrade, deframed by
:class:`~sipwarden.sources.websocket.WebSocketDeframer` (RFC 7118); SCTP user messages that
begin with a start line are SIP messages. In-order bytes are fed, retransmitted bytes ignored; a gap
(lost or reordered segment) or a framing error drops that direction's buffer, and the direction
resynchronises at the next segment that starts with a SIP start line. At most ``max_flows``
directions are tracked; the least recently used is evicted and counted.

Everything here is sans-IO: bytes and packet timestamps in, values out, counters in
:class:`SourceStats`.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import NamedTuple

from sipwarden.net import Endpoint, Transport
from sipwarden.sip import NEED_DATA, SipParseError, StreamFramer
from sipwarden.sip.framing import FramerEvent
from sipwarden.sip.limits import DEFAULT_LIMITS, ParseLimits
from sipwarden.sources.websocket import WebSocketDeframer, WebSocketError, starts_websocket

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_LOOP",
    "LINKTYPE_NULL",
    "LINKTYPE_RAW",
    "SUPPORTED_LINKTYPES",
    "Datagram",
    "FragmentTable",
    "FrameDecoder",
    "Segment",
    "SipExtractor",
    "SipPayload",
    "SkipReason",
    "Skipped",
    "SourceStats",
    "looks_like_sip",
]

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
_RAW_LINKTYPES = frozenset({LINKTYPE_RAW, 12, 14, 228, 229})
SUPPORTED_LINKTYPES = frozenset(
    {LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2}
    | _RAW_LINKTYPES
)

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ETH_VLAN = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})
_GRE_BRIDGE = 0x6558
_GRE_PPP = 0x880B
# BSD address families for IPv6 differ by OS: 24 (NetBSD/OpenBSD), 28 (FreeBSD), 30 (macOS).
_AF_INET = 2
_AF_INET6 = frozenset({10, 24, 28, 30})

_PROTO_IPIP = 4
_PROTO_TCP = 6
_PROTO_UDP = 17
_PROTO_IPV6 = 41
_PROTO_GRE = 47
_PROTO_SCTP = 132
_IPV6_SKIPPABLE = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT = 44
_IPV6_AH = 51

_MAX_TUNNEL_DEPTH = 1

_U16 = struct.Struct("!H")
_U32_BE = struct.Struct(">I")
_U32_LE = struct.Struct("<I")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_IPV6_FRAG = struct.Struct("!BBHI")
_UDP = struct.Struct("!HHH")
_TCP = struct.Struct("!HHIIBB")
_GRE = struct.Struct("!HH")
_SCTP = struct.Struct("!HHII")
_SCTP_CHUNK = struct.Struct("!BBH")
_SCTP_DATA = struct.Struct("!IHHI")  # TSN, stream id, stream sequence, payload protocol id
_SCTP_DATA_CHUNK = 0
_SCTP_BEGIN = 0x02
_SCTP_END = 0x01


class SkipReason(StrEnum):
    """Why a frame produced no UDP datagram or TCP segment (a closed set, used as counter names)."""

    UNSUPPORTED_LINKTYPE = "unsupported_linktype"
    NON_IP = "non_ip"
    TRUNCATED = "truncated"
    MALFORMED = "malformed"
    OTHER_PROTOCOL = "other_protocol"
    FRAGMENT_PENDING = "fragment_pending"
    FRAGMENT_DROPPED = "fragment_dropped"
    TUNNEL_TOO_DEEP = "tunnel_too_deep"


class Datagram(NamedTuple):
    """One UDP datagram (reassembled if it came in fragments)."""

    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


class Segment(NamedTuple):
    """One TCP segment; ``flags`` is the TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04 …)."""

    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    flags: int
    payload: bytes

    @property
    def flow(self) -> tuple[str, int, str, int]:
        """Key of this direction of the connection."""
        return (self.src, self.sport, self.dst, self.dport)


class DataChunk(NamedTuple):
    """One SCTP DATA chunk's user data (RFC 9260 §3.3.1); a user message is one chunk with
    both ``begin`` and ``end``, or consecutive chunks of one stream from begin to end."""

    stream: int
    begin: bool
    end: bool
    data: bytes


class Chunks(NamedTuple):
    """The DATA chunks of one SCTP packet (RFC 4168 carries one SIP message per user message)."""

    src: str
    sport: int
    dst: str
    dport: int
    chunks: tuple[DataChunk, ...]


class Skipped(NamedTuple):
    reason: SkipReason
    detail: str = ""


Decoded = Datagram | Segment | Chunks | Skipped

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04


@dataclass(slots=True)
class SourceStats:
    """Counters a capture reader keeps; every field is a count, readable at any time."""

    frames: int = 0
    #: frames decoded down to a UDP datagram or a TCP segment
    decoded: int = 0
    unsupported_linktype: int = 0
    non_ip: int = 0
    #: frames cut short (snap length, or bytes missing inside the frame)
    truncated: int = 0
    malformed: int = 0
    #: IP packets carrying neither UDP nor TCP (ICMP, SCTP …)
    other_protocol: int = 0
    tunnels: int = 0
    tunnel_too_deep: int = 0
    fragments: int = 0
    fragments_reassembled: int = 0
    fragments_expired: int = 0
    fragments_evicted: int = 0
    fragments_dropped: int = 0
    udp_datagrams: int = 0
    udp_sip: int = 0
    tcp_segments: int = 0
    tcp_messages: int = 0
    tcp_keepalives: int = 0
    tcp_retransmissions: int = 0
    tcp_gaps: int = 0
    tcp_framing_errors: int = 0
    #: SIP messages carried in WebSocket messages (RFC 7118), and WebSocket streams dropped
    ws_messages: int = 0
    ws_framing_errors: int = 0
    #: SCTP packets, SIP messages they carried (RFC 4168), fragments that could not be joined
    sctp_packets: int = 0
    sctp_messages: int = 0
    sctp_fragments_dropped: int = 0
    flows_evicted: int = 0
    #: SIP messages yielded (UDP + TCP)
    sip_messages: int = 0
    #: the file ended inside a record: the records before it were kept
    truncated_records: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _ip4_text(raw: bytes) -> str:
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


def _ip6_text(raw: bytes) -> str:
    return ipaddress.IPv6Address(raw).compressed


class _Skip(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, reason: SkipReason, detail: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Partial:
    __slots__ = ("first_ts", "parts", "size", "total")

    def __init__(self, first_ts: float) -> None:
        self.first_ts = first_ts
        self.parts: dict[int, bytes] = {}
        self.total: int | None = None
        self.size = 0


class FragmentTable:
    """Bounded IP fragment reassembly, keyed by (src, dst, protocol, id); time is packet time.

    ``max_datagrams`` datagrams may be in progress; adding one more evicts the oldest (counted
    in ``stats.fragments_evicted``). A datagram whose first fragment is older than ``timeout_s``
    is discarded (``fragments_expired``); 30 s is Linux's ``ipfrag_time`` default. Fragments that
    overlap inconsistently, exceed 65535 bytes or contradict the end already seen are counted in
    ``fragments_dropped`` and drop their datagram.
    """

    MAX_DATAGRAM = 65535

    def __init__(
        self, stats: SourceStats, *, max_datagrams: int = 1024, timeout_s: float = 30.0
    ) -> None:
        self._stats = stats
        self.max_datagrams = max_datagrams
        self.timeout_s = timeout_s
        self._table: OrderedDict[tuple[object, ...], _Partial] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def add(
        self, key: tuple[object, ...], offset: int, more: bool, data: bytes, ts: float
    ) -> bytes | SkipReason:
        """Add one fragment: the whole payload once complete, else FRAGMENT_PENDING or _DROPPED."""
        stats = self._stats
        stats.fragments += 1
        self._expire(ts)
        partial = self._table.get(key)
        if partial is None:
            if len(self._table) >= self.max_datagrams:
                self._table.popitem(last=False)
                stats.fragments_evicted += 1
            partial = self._table[key] = _Partial(ts)
        end = offset + len(data)
        bad = end > self.MAX_DATAGRAM or (partial.total is not None and end > partial.total)
        if not more:
            if partial.total is not None and partial.total != end:
                bad = True
            if partial.size and max(o + len(d) for o, d in partial.parts.items()) > end:
                bad = True
            partial.total = end
        elif len(data) % 8:
            bad = True  # only the last fragment may have a length that is not a multiple of 8
        previous = partial.parts.get(offset)
        if previous is not None and previous != data:
            bad = True
        if bad:
            del self._table[key]
            stats.fragments_dropped += 1
            return SkipReason.FRAGMENT_DROPPED
        if previous is None:
            partial.parts[offset] = data
            partial.size += len(data)
        if partial.total is None or partial.size < partial.total:
            return SkipReason.FRAGMENT_PENDING
        return self._assemble(key, partial)

    def _assemble(self, key: tuple[object, ...], partial: _Partial) -> bytes | SkipReason:
        assert partial.total is not None
        out = bytearray(partial.total)
        covered = 0
        for offset in sorted(partial.parts):
            data = partial.parts[offset]
            if offset > covered:
                return SkipReason.FRAGMENT_PENDING  # a hole: overlaps inflated size; wait
            out[offset : offset + len(data)] = data
            covered = max(covered, offset + len(data))
        if covered != partial.total:
            return SkipReason.FRAGMENT_PENDING
        del self._table[key]
        self._stats.fragments_reassembled += 1
        return bytes(out)

    def _expire(self, now: float) -> None:
        table = self._table
        while table:
            key, partial = next(iter(table.items()))
            if now - partial.first_ts <= self.timeout_s:
                break
            del table[key]
            self._stats.fragments_expired += 1


class FrameDecoder:
    """Link-layer frame → :class:`Datagram` | :class:`Segment` | :class:`Skipped`."""

    def __init__(
        self,
        stats: SourceStats | None = None,
        *,
        max_fragmented_datagrams: int = 1024,
        fragment_timeout_s: float = 30.0,
    ) -> None:
        self.stats = stats if stats is not None else SourceStats()
        self.fragments = FragmentTable(
            self.stats, max_datagrams=max_fragmented_datagrams, timeout_s=fragment_timeout_s
        )

    def decode(self, linktype: int, data: bytes, ts: float) -> Decoded:
        """Decode one frame captured at packet time ``ts``; counts the outcome in ``stats``."""
        stats = self.stats
        try:
            result = self._link(linktype, data, ts)
        except _Skip as skip:
            result = Skipped(skip.reason, skip.detail)
        except (struct.error, IndexError, ValueError) as exc:
            result = Skipped(SkipReason.TRUNCATED, str(exc))
        if isinstance(result, Skipped):
            if result.reason is not SkipReason.FRAGMENT_PENDING:
                if result.reason is SkipReason.FRAGMENT_DROPPED:
                    pass  # counted by the fragment table
                else:
                    name = result.reason.value
                    setattr(stats, name, getattr(stats, name) + 1)
        else:
            stats.decoded += 1
            if isinstance(result, Datagram):
                stats.udp_datagrams += 1
            elif isinstance(result, Segment):
                stats.tcp_segments += 1
            else:
                stats.sctp_packets += 1
        return result

    # -- link layer -----------------------------------------------------------------------

    def _link(self, linktype: int, data: bytes, ts: float) -> Decoded:
        if linktype == LINKTYPE_ETHERNET:
            return self._ethernet(data, 0, ts, 0)
        if linktype in _RAW_LINKTYPES:
            return self._ip(data, 0, ts, 0)
        if linktype == LINKTYPE_LINUX_SLL:
            if len(data) < 16:
                raise _Skip(SkipReason.TRUNCATED, "short SLL header")
            return self._ethertype(_U16.unpack_from(data, 14)[0], data, 16, ts, 0)
        if linktype == LINKTYPE_LINUX_SLL2:
            if len(data) < 20:
                raise _Skip(SkipReason.TRUNCATED, "short SLL2 header")
            return self._ethertype(_U16.unpack_from(data, 0)[0], data, 20, ts, 0)
        if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
            if len(data) < 4:
                raise _Skip(SkipReason.TRUNCATED, "short loopback header")
            if linktype == LINKTYPE_LOOP:
                family = _U32_BE.unpack_from(data, 0)[0]
            else:
                family = _U32_LE.unpack_from(data, 0)[0]
                if family > 0xFFFF:
                    family = _U32_BE.unpack_from(data, 0)[0]
            if family == _AF_INET or family in _AF_INET6:
                return self._ip(data, 4, ts, 0)
            raise _Skip(SkipReason.NON_IP, f"address family {family}")
        raise _Skip(SkipReason.UNSUPPORTED_LINKTYPE, f"link type {linktype}")

    def _ethernet(self, data: bytes, offset: int, ts: float, depth: int) -> Decoded:
        if len(data) < offset + 14:
            raise _Skip(SkipReason.TRUNCATED, "short Ethernet header")
        offset += 12
        ethertype = _U16.unpack_from(data, offset)[0]
        while ethertype in _ETH_VLAN:
            offset += 4
            if len(data) < offset + 2:
                raise _Skip(SkipReason.TRUNCATED, "short VLAN tag")
            ethertype = _U16.unpack_from(data, offset)[0]
        return self._ethertype(ethertype, data, offset + 2, ts, depth)

    def _ethertype(
        self, ethertype: int, data: bytes, offset: int, ts: float, depth: int
    ) -> Decoded:
        if ethertype in (_ETH_IPV4, _ETH_IPV6):
            return self._ip(data, offset, ts, depth)
        raise _Skip(SkipReason.NON_IP, f"ethertype 0x{ethertype:04x}")

    # -- IP ---------------------------------------------------------------------------

    def _ip(self, data: bytes, offset: int, ts: float, depth: int) -> Decoded:
        if len(data) <= offset:
            raise _Skip(SkipReason.TRUNCATED, "no IP header")
        version = data[offset] >> 4
        if version == 4:
            return self._ipv4(data, offset, ts, depth)
        if version == 6:
            return self._ipv6(data, offset, ts, depth)
        raise _Skip(SkipReason.NON_IP, f"IP version {version}")

    def _ipv4(self, data: bytes, offset: int, ts: float, depth: int) -> Decoded:
        if len(data) < offset + 20:
            raise _Skip(SkipReason.TRUNCATED, "short IPv4 header")
        vihl, _tos, total, ident, frag, _ttl, proto, _sum, src, dst = _IPV4.unpack_from(
            data, offset
        )
        ihl = (vihl & 0x0F) * 4
        if ihl < 20 or total < ihl:
            raise _Skip(SkipReason.MALFORMED, f"IPv4 header length {ihl}, total {total}")
        end = offset + total
        if len(data) < end:
            if total == 0 and len(data) >= offset + ihl:  # TSO captures write 0
                end = len(data)
            else:
                raise _Skip(SkipReason.TRUNCATED, f"IPv4 total length {total} > captured")
        payload = data[offset + ihl : end]
        more = bool(frag & 0x2000)
        frag_offset = (frag & 0x1FFF) * 8
        if more or frag_offset:
            whole = self.fragments.add((4, src, dst, proto, ident), frag_offset, more, payload, ts)
            if isinstance(whole, SkipReason):
                return Skipped(whole)
            payload = whole
        return self._transport(proto, _ip4_text(src), _ip4_text(dst), payload, ts, depth)

    def _ipv6(self, data: bytes, offset: int, ts: float, depth: int) -> Decoded:
        if len(data) < offset + 40:
            raise _Skip(SkipReason.TRUNCATED, "short IPv6 header")
        _vtf, plen, nxt, _hop, src, dst = _IPV6.unpack_from(data, offset)
        end = offset + 40 + plen
        if len(data) < end:
            raise _Skip(SkipReason.TRUNCATED, f"IPv6 payload length {plen} > captured")
        if plen == 0:  # jumbogram or TSO; take what was captured
            end = len(data)
        pos = offset + 40
        fragment: tuple[int, bool, int] | None = None
        while True:
            if nxt in _IPV6_SKIPPABLE or nxt == _IPV6_AH:
                if end < pos + 8:
                    raise _Skip(SkipReason.TRUNCATED, "short IPv6 extension header")
                size = (data[pos + 1] + 2) * 4 if nxt == _IPV6_AH else (data[pos + 1] + 1) * 8
                nxt = data[pos]
                pos += size
            elif nxt == _IPV6_FRAGMENT:
                if end < pos + 8 or fragment is not None:
                    raise _Skip(SkipReason.MALFORMED, "bad IPv6 fragment header")
                nxt, _res, off_m, ident = _IPV6_FRAG.unpack_from(data, pos)
                fragment = (off_m & 0xFFF8, bool(off_m & 1), ident)
                pos += 8
            else:
                break
        if pos > end:
            raise _Skip(SkipReason.TRUNCATED, "IPv6 extension headers past the payload")
        payload = data[pos:end]
        if fragment is not None and (fragment[0] or fragment[1]):
            frag_offset, more, ident = fragment
            whole = self.fragments.add((6, src, dst, nxt, ident), frag_offset, more, payload, ts)
            if isinstance(whole, SkipReason):
                return Skipped(whole)
            payload = whole
        return self._transport(nxt, _ip6_text(src), _ip6_text(dst), payload, ts, depth)

    # -- transport ------------------------------------------------------------------------

    def _transport(
        self, proto: int, src: str, dst: str, payload: bytes, ts: float, depth: int
    ) -> Decoded:
        if proto == _PROTO_UDP:
            if len(payload) < 8:
                raise _Skip(SkipReason.TRUNCATED, "short UDP header")
            sport, dport, length = _UDP.unpack_from(payload, 0)
            if length < 8:
                raise _Skip(SkipReason.MALFORMED, f"UDP length {length}")
            if length > len(payload):
                raise _Skip(SkipReason.TRUNCATED, f"UDP length {length} > captured")
            return Datagram(src, sport, dst, dport, payload[8:length])
        if proto == _PROTO_TCP:
            if len(payload) < 20:
                raise _Skip(SkipReason.TRUNCATED, "short TCP header")
            sport, dport, seq, _ack, off, flags = _TCP.unpack_from(payload, 0)
            header = (off >> 4) * 4
            if header < 20:
                raise _Skip(SkipReason.MALFORMED, f"TCP header length {header}")
            if header > len(payload):
                raise _Skip(SkipReason.TRUNCATED, "short TCP options")
            return Segment(src, sport, dst, dport, seq, flags, payload[header:])
        if proto == _PROTO_SCTP:
            return _sctp(src, dst, payload)
        if proto in (_PROTO_IPIP, _PROTO_IPV6, _PROTO_GRE):
            if depth >= _MAX_TUNNEL_DEPTH:
                raise _Skip(SkipReason.TUNNEL_TOO_DEEP, f"protocol {proto} inside a tunnel")
            self.stats.tunnels += 1
            if proto == _PROTO_GRE:
                return self._gre(payload, ts, depth + 1)
            return self._ip(payload, 0, ts, depth + 1)
        raise _Skip(SkipReason.OTHER_PROTOCOL, f"IP protocol {proto}")

    def _gre(self, data: bytes, ts: float, depth: int) -> Decoded:
        if len(data) < 4:
            raise _Skip(SkipReason.TRUNCATED, "short GRE header")
        flags, ethertype = _GRE.unpack_from(data, 0)
        version = flags & 0x0007
        if flags & 0x4000 or version > 1:  # source routing, or an unknown version
            raise _Skip(SkipReason.OTHER_PROTOCOL, f"GRE flags 0x{flags:04x}")
        offset = 4 + 4 * bool(flags & 0x8000) + 4 * bool(flags & 0x2000)
        offset += 4 * bool(flags & 0x1000)
        if version == 1:  # RFC 2637 enhanced GRE (PPTP): optional acknowledgement number
            offset += 4 * bool(flags & 0x0080)
        if len(data) < offset:
            raise _Skip(SkipReason.TRUNCATED, "short GRE header")
        if ethertype == _GRE_BRIDGE:
            return self._ethernet(data, offset, ts, depth)
        if ethertype == _GRE_PPP:
            return self._ppp(data, offset, ts, depth)
        return self._ethertype(ethertype, data, offset, ts, depth)

    def _ppp(self, data: bytes, offset: int, ts: float, depth: int) -> Decoded:
        if data[offset : offset + 2] == b"\xff\x03":  # HDLC address and control
            offset += 2
        proto = data[offset]
        if proto & 1:  # protocol-field compression: one byte
            offset += 1
        else:
            proto = _U16.unpack_from(data, offset)[0]
            offset += 2
        if proto in (0x21, 0x57):  # IPv4, IPv6
            return self._ip(data, offset, ts, depth)
        raise _Skip(SkipReason.NON_IP, f"PPP protocol 0x{proto:04x}")


# -- SIP extraction -------------------------------------------------------------------------

_START_LINE = re.compile(
    rb"[A-Za-z0-9\-.!%*_+`'~]+ [A-Za-z][A-Za-z0-9+.\-]*:[^\x00-\x20\x7f]* SIP/2\.0\r?\n"
    rb"|SIP/2\.0 \d{3}[ \r\n]"
)


# A TCP segment may end inside the start line; the framer checks the rest of it.
_STREAM_START = re.compile(rb"[A-Za-z0-9\-.!%*_+`'~]+ [A-Za-z][A-Za-z0-9+.\-]*:|SIP/2\.0 \d")


def looks_like_sip(payload: bytes) -> bool:
    """True if ``payload`` begins with a SIP request line or status line (any port)."""
    return _START_LINE.match(payload) is not None


def _sctp(src: str, dst: str, payload: bytes) -> Chunks:
    """SCTP common header and its DATA chunks; other chunk types (INIT, SACK, HEARTBEAT …) are
    skipped. The checksum is not verified: captures taken on the sending host carry offloaded,
    unfilled checksums."""
    if len(payload) < 12:
        raise _Skip(SkipReason.TRUNCATED, "short SCTP header")
    sport, dport, _vtag, _checksum = _SCTP.unpack_from(payload, 0)
    chunks: list[DataChunk] = []
    pos = 12
    while pos + 4 <= len(payload):
        kind, flags, length = _SCTP_CHUNK.unpack_from(payload, pos)
        if length < 4:
            raise _Skip(SkipReason.MALFORMED, f"SCTP chunk length {length}")
        if pos + length > len(payload):
            raise _Skip(SkipReason.TRUNCATED, f"SCTP chunk length {length} > captured")
        if kind == _SCTP_DATA_CHUNK:
            if length < 16:
                raise _Skip(SkipReason.MALFORMED, f"SCTP DATA chunk length {length}")
            _tsn, stream, _ssn, _ppid = _SCTP_DATA.unpack_from(payload, pos + 4)
            chunks.append(
                DataChunk(
                    stream,
                    bool(flags & _SCTP_BEGIN),
                    bool(flags & _SCTP_END),
                    payload[pos + 16 : pos + length],
                )
            )
        pos += (length + 3) & ~3
    return Chunks(src, sport, dst, dport, tuple(chunks))


class SipPayload(NamedTuple):
    """One SIP message's bytes; ``frame`` is the 1-based number of the frame that completed it.

    On a TCP stream that cannot be framed (a message over the size limit, a bad
    Content-Length) ``error`` says why and ``payload`` is empty: malformed traffic is evidence,
    so it still reaches the detectors; the stream is dropped until it starts a message again.
    """

    frame: int
    ts: float
    src: Endpoint
    dst: Endpoint
    payload: bytes
    error: SipParseError | None = None


def _payload(
    frame: int,
    ts: float,
    packet: Datagram | Segment | Chunks,
    transport: Transport,
    payload: bytes,
    error: SipParseError | None = None,
) -> SipPayload:
    return SipPayload(
        frame,
        ts,
        Endpoint(packet.src, packet.sport, transport),
        Endpoint(packet.dst, packet.dport, transport),
        payload,
        error,
    )


class _Flow:
    __slots__ = ("framer", "next_seq", "sip")

    def __init__(self, framer: StreamFramer | WebSocketDeframer, next_seq: int, sip: bool) -> None:
        self.framer = framer
        self.next_seq = next_seq
        #: The stream began with a SIP start line or has framed a message: its framing errors
        #: are SIP evidence. (A stream that merely looked plausible - an FTP "550 ..." reply -
        #: fails silently.)
        self.sip = sip


class SipExtractor:
    """Frames in, SIP payloads out: UDP by content, TCP per direction through StreamFramer."""

    def __init__(
        self,
        stats: SourceStats | None = None,
        *,
        max_flows: int = 10_000,
        max_fragmented_datagrams: int = 1024,
        fragment_timeout_s: float = 30.0,
        limits: ParseLimits = DEFAULT_LIMITS,
    ) -> None:
        self.stats = stats if stats is not None else SourceStats()
        self.decoder = FrameDecoder(
            self.stats,
            max_fragmented_datagrams=max_fragmented_datagrams,
            fragment_timeout_s=fragment_timeout_s,
        )
        self.max_flows = max_flows
        self._limits = limits
        self._flows: OrderedDict[tuple[str, int, str, int], _Flow] = OrderedDict()
        # SCTP user messages in fragments, per (association direction, stream); bounded like
        # the TCP flows, each buffer by max_message_bytes.
        self._sctp_partial: OrderedDict[tuple[str, int, str, int, int], bytearray] = OrderedDict()

    @property
    def flow_count(self) -> int:
        return len(self._flows)

    def feed(self, frame: int, ts: float, linktype: int, data: bytes) -> list[SipPayload]:
        """Decode one frame; the SIP messages it completes (usually zero or one)."""
        self.stats.frames += 1
        decoded = self.decoder.decode(linktype, data, ts)
        if isinstance(decoded, Datagram):
            if not looks_like_sip(decoded.payload):
                return []
            self.stats.udp_sip += 1
            self.stats.sip_messages += 1
            return [_payload(frame, ts, decoded, Transport.UDP, decoded.payload)]
        if isinstance(decoded, Segment):
            return self._segment(frame, ts, decoded)
        if isinstance(decoded, Chunks):
            return self._chunks(frame, ts, decoded)
        return []

    def _chunks(self, frame: int, ts: float, packet: Chunks) -> list[SipPayload]:
        """SCTP user messages (RFC 4168: one SIP message each), fragments joined per stream in
        order; a fragment out of order drops that stream's partial message."""
        stats = self.stats
        out: list[SipPayload] = []
        partial = self._sctp_partial
        for chunk in packet.chunks:
            key = (packet.src, packet.sport, packet.dst, packet.dport, chunk.stream)
            if chunk.begin and chunk.end:
                message = chunk.data
            elif chunk.begin:
                partial[key] = bytearray(chunk.data)
                if len(partial) > self.max_flows:
                    partial.popitem(last=False)
                    stats.flows_evicted += 1
                continue
            else:
                buffer = partial.get(key)
                if buffer is None:
                    stats.sctp_fragments_dropped += 1
                    continue
                buffer += chunk.data
                if len(buffer) > self._limits.max_message_bytes:
                    del partial[key]
                    stats.sctp_fragments_dropped += 1
                    continue
                if not chunk.end:
                    continue
                message = bytes(partial.pop(key))
            if not looks_like_sip(message):
                continue
            stats.sctp_messages += 1
            stats.sip_messages += 1
            out.append(_payload(frame, ts, packet, Transport.SCTP, message))
        return out

    def _segment(self, frame: int, ts: float, seg: Segment) -> list[SipPayload]:
        stats = self.stats
        flows = self._flows
        key = seg.flow
        flow = flows.get(key)
        payload = seg.payload
        seq = seg.seq
        if flow is not None:
            flows.move_to_end(key)
            if payload:
                ahead = (seq - flow.next_seq) & 0xFFFFFFFF
                if ahead >= 0x80000000:  # starts before what we have: retransmission
                    behind = 0x100000000 - ahead
                    if behind >= len(payload):
                        stats.tcp_retransmissions += 1
                        payload = b""
                    else:
                        payload = payload[behind:]
                        seq = flow.next_seq
                elif ahead:
                    stats.tcp_gaps += 1
                    del flows[key]
                    flow = None
        if flow is None and payload:
            if _STREAM_START.match(payload):
                flow = _Flow(StreamFramer(self._limits), seq, looks_like_sip(payload))
            elif starts_websocket(payload):
                # SIP over WebSocket (RFC 7118): which messages are SIP is decided per message.
                flow = _Flow(WebSocketDeframer(self._limits.max_message_bytes), seq, False)
        if flow is not None and key not in flows:
            if seg.flags & TCP_SYN:
                seq = (seq + 1) & 0xFFFFFFFF
            flows[key] = flow
            if len(flows) > self.max_flows:
                flows.popitem(last=False)
                stats.flows_evicted += 1
        out: list[SipPayload] = []
        if flow is not None and payload:
            flow.next_seq = (seq + len(payload)) & 0xFFFFFFFF
            out = self._frame(flow, key, frame, ts, seg, payload)
        if seg.flags & (TCP_FIN | TCP_RST) and key in flows:
            del flows[key]
        return out

    def _frame(
        self,
        flow: _Flow,
        key: tuple[str, int, str, int],
        frame: int,
        ts: float,
        seg: Segment,
        payload: bytes,
    ) -> list[SipPayload]:
        stats = self.stats
        out: list[SipPayload] = []
        if isinstance(flow.framer, WebSocketDeframer):
            return self._websocket(flow, flow.framer, key, frame, ts, seg, payload)
        try:
            flow.framer.feed(payload)
            while True:
                item = flow.framer.next_message()
                if item is NEED_DATA:
                    break
                if isinstance(item, FramerEvent):
                    stats.tcp_keepalives += 1
                    continue
                stats.tcp_messages += 1
                stats.sip_messages += 1
                flow.sip = True
                out.append(_payload(frame, ts, seg, Transport.TCP, item))
        except SipParseError as exc:
            stats.tcp_framing_errors += 1
            self._flows.pop(key, None)
            if not flow.sip:
                return out
            out.append(_payload(frame, ts, seg, Transport.TCP, b"", exc))
        return out

    def _websocket(
        self,
        flow: _Flow,
        deframer: WebSocketDeframer,
        key: tuple[str, int, str, int],
        frame: int,
        ts: float,
        seg: Segment,
        payload: bytes,
    ) -> list[SipPayload]:
        stats = self.stats
        try:
            messages = deframer.feed(payload)
        except WebSocketError:
            stats.ws_framing_errors += 1
            self._flows.pop(key, None)
            return []
        out: list[SipPayload] = []
        for message in messages:
            if not looks_like_sip(message):
                continue  # RFC 7118 allows other subprotocol traffic; only SIP is ours
            flow.sip = True
            stats.ws_messages += 1
            stats.sip_messages += 1
            out.append(_payload(frame, ts, seg, Transport.WS, message))
        return out
