"""Capture files → frames → SIP payloads (classic pcap and pcapng).

:func:`iter_frames` reads records with 1-based frame numbers and packet timestamps;
:func:`iter_sip` runs them through :class:`~sipwarden.sources.decode.SipExtractor`.

Classic pcap: both byte orders, microsecond (``a1b2c3d4``) and nanosecond (``a1b23c4d``) magic.
pcapng: section header (byte order per section), interface descriptions (link type,
``if_tsresol``, ``if_tsoffset``), enhanced, simple and obsolete packet blocks; other blocks are
skipped. A packet block whose content is inconsistent (unknown interface, captured length past
the block) is counted in ``stats.malformed`` and skipped; its frame number is still used.

Problems with the *file* raise :class:`~sipwarden.errors.InputError` naming the file and the
frame: not a capture, a truncated file header, or a record/block length that makes the rest
unreadable. A file that simply ends inside its last record stops the iteration cleanly with
``stats.truncated_records`` counted; everything before it has been yielded. Bad *frames* are never
an error: the decoder counts them.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from sipwarden.errors import InputError
from sipwarden.sip.limits import DEFAULT_LIMITS, ParseLimits
from sipwarden.sources.decode import SipExtractor, SipPayload, SourceStats

__all__ = ["Frame", "SipPayload", "SourceStats", "iter_frames", "iter_sip"]

#: A record claiming more than this is taken as corruption, not a big packet.
MAX_RECORD_BYTES = 16 * 1024 * 1024

_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_BYTE_ORDER_MAGIC = 0x1A2B3C4D

_SHB = 0x0A0D0D0A
_IDB = 1
_OPB = 2
_SPB = 3
_EPB = 6


class Frame(NamedTuple):
    """One captured frame: 1-based ``number``, ``ts`` in epoch seconds, link type, bytes."""

    number: int
    ts: float
    linktype: int
    data: bytes


def iter_frames(path: str | Path, stats: SourceStats | None = None) -> Iterator[Frame]:
    """The frames of a pcap or pcapng file, in file order.

    ``stats.truncated_records`` counts a file that ends inside a record. Raises
    :class:`InputError` for a file that is not a capture or cannot be read.
    """
    stats = stats if stats is not None else SourceStats()
    source = str(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed in finally, across yields
    except OSError as exc:
        raise InputError(source, f"cannot open: {exc.strerror or exc}") from exc
    try:
        try:
            size = handle.seek(0, 2)
            if size < 4:
                raise InputError(source, f"not a pcap or pcapng file ({size} bytes)")
            buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise InputError(source, f"cannot read: {exc.strerror or exc}") from exc
        try:
            magic = buf[:4]
            if magic in _PCAP_MAGIC:
                yield from _pcap(buf, source, stats)
            elif magic == _PCAPNG_SHB:
                yield from _pcapng(buf, source, stats)
            else:
                raise InputError(source, f"not a pcap or pcapng file (magic {magic.hex()})")
        finally:
            buf.close()
    finally:
        handle.close()


def iter_sip(
    path: str | Path,
    stats: SourceStats | None = None,
    *,
    max_flows: int = 10_000,
    max_fragmented_datagrams: int = 1024,
    fragment_timeout_s: float = 30.0,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> Iterator[SipPayload]:
    """Every SIP message in a capture, one per item, with the frame that completed it."""
    stats = stats if stats is not None else SourceStats()
    extractor = SipExtractor(
        stats,
        max_flows=max_flows,
        max_fragmented_datagrams=max_fragmented_datagrams,
        fragment_timeout_s=fragment_timeout_s,
        limits=limits,
    )
    feed = extractor.feed
    for frame in iter_frames(path, stats):
        yield from feed(frame.number, frame.ts, frame.linktype, frame.data)


#: Mapped pages already read are handed back every this many bytes: a mapped file's pages count
#: in the process's resident memory, so a 1 GB capture would otherwise end with 1 GB resident.
_RELEASE_BYTES = 8 << 20


class _Releaser:
    """Drops the pages of a read-only mapping behind the reader (``MADV_DONTNEED``; frames are
    copied out as ``bytes``, so nothing refers to them). Where madvise is missing, a no-op."""

    __slots__ = ("buf", "done")

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.done = 0

    def upto(self, pos: int) -> None:
        if pos - self.done < _RELEASE_BYTES or not hasattr(mmap, "MADV_DONTNEED"):
            return
        end = pos - pos % mmap.PAGESIZE
        self.buf.madvise(mmap.MADV_DONTNEED, self.done, end - self.done)
        self.done = end


def _pcap(buf: mmap.mmap, source: str, stats: SourceStats) -> Iterator[Frame]:
    size = len(buf)
    if size < 24:
        raise InputError(source, f"truncated pcap file header: {size} of 24 bytes")
    order, unit = _PCAP_MAGIC[buf[:4]]
    _major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack_from(
        order + "HHiIII", buf, 4
    )
    # The upper bits of the link-type field may hold an FCS length (pcap-linktype(7)).
    linktype = network & 0x0FFFFFFF
    record = struct.Struct(order + "IIII")
    unpack = record.unpack_from
    pos = 24
    number = 0
    release = _Releaser(buf).upto
    while pos < size:
        number += 1
        release(pos)
        if pos + 16 > size:
            stats.truncated_records += 1
            return
        sec, frac, caplen, _origlen = unpack(buf, pos)
        if caplen > MAX_RECORD_BYTES:
            raise InputError(
                source, f"record length {caplen} is not plausible (corrupt file)", f"frame {number}"
            )
        start = pos + 16
        pos = start + caplen
        if pos > size:
            stats.truncated_records += 1
            return
        yield Frame(number, sec + frac * unit, linktype, buf[start:pos])


class _Interface(NamedTuple):
    linktype: int
    unit: float
    offset: int


def _pcapng(buf: mmap.mmap, source: str, stats: SourceStats) -> Iterator[Frame]:
    size = len(buf)
    if size < 12:
        raise InputError(source, f"truncated pcapng section header: {size} bytes")
    pos = 0
    number = 0
    order = "<"
    interfaces: list[_Interface] = []
    u32 = struct.Struct("<I")
    last_ts = 0.0
    release = _Releaser(buf).upto
    while pos < size:
        release(pos)
        if pos + 12 > size:
            stats.truncated_records += 1
            return
        raw_type = buf[pos : pos + 4]
        if raw_type == _PCAPNG_SHB:
            if pos + 12 > size:
                stats.truncated_records += 1
                return
            magic = buf[pos + 8 : pos + 12]
            if magic == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif magic == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                raise InputError(source, "bad pcapng byte-order magic", f"offset {pos}")
            u32 = struct.Struct(order + "I")
            interfaces = []
        block_type = u32.unpack_from(buf, pos)[0]
        length = u32.unpack_from(buf, pos + 4)[0]
        if length < 12 or length % 4:
            raise InputError(
                source, f"pcapng block length {length} is invalid", f"frame {number + 1}"
            )
        end = pos + length
        if end > size:
            if pos == 0:
                raise InputError(source, "truncated pcapng section header")
            stats.truncated_records += 1
            return
        body = pos + 8
        if block_type == _IDB:
            interfaces.append(_idb(buf, body, end - 4, order))
        elif block_type in (_EPB, _OPB, _SPB):
            number += 1
            frame = _packet(buf, block_type, body, end - 4, order, interfaces)
            if frame is None:  # the block is whole, its content is not: a bad frame
                stats.malformed += 1
            else:
                linktype, ts, data = frame
                if ts is None:  # simple packet blocks carry no time: keep the clock monotonic
                    ts = last_ts
                last_ts = ts
                yield Frame(number, ts, linktype, data)
        pos = end


def _idb(buf: mmap.mmap, pos: int, end: int, order: str) -> _Interface:
    if pos + 8 > end:
        return _Interface(-1, 1e-6, 0)
    linktype = struct.unpack_from(order + "H", buf, pos)[0]
    unit = 1e-6
    offset = 0
    opt = pos + 8
    head = struct.Struct(order + "HH")
    while opt + 4 <= end:
        code, length = head.unpack_from(buf, opt)
        value = opt + 4
        if code == 0 or value + length > end:
            break
        if code == 9 and length >= 1:
            resolution = buf[value]
            unit = 2.0 ** -(resolution & 0x7F) if resolution & 0x80 else 10.0**-resolution
        elif code == 14 and length >= 8:
            offset = struct.unpack_from(order + "q", buf, value)[0]
        opt = value + ((length + 3) & ~3)
    return _Interface(linktype, unit, offset)


def _packet(
    buf: mmap.mmap, block_type: int, pos: int, end: int, order: str, interfaces: list[_Interface]
) -> tuple[int, float | None, bytes] | None:
    if block_type == _SPB:
        if pos + 4 > end or not interfaces:
            return None
        origlen = struct.unpack_from(order + "I", buf, pos)[0]
        data = buf[pos + 4 : min(end, pos + 4 + origlen)]
        return interfaces[0].linktype, None, data
    if pos + 20 > end:
        return None
    if block_type == _EPB:
        iface, high, low, caplen, _origlen = struct.unpack_from(order + "IIIII", buf, pos)
    else:
        iface, _drops, high, low, caplen, _origlen = struct.unpack_from(order + "HHIIII", buf, pos)
    start = pos + 20
    if iface >= len(interfaces) or start + caplen > end:
        return None
    info = interfaces[iface]
    ts = ((high << 32) | low) * info.unit + info.offset
    return info.linktype, ts, buf[start : start + caplen]
