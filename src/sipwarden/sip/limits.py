"""ParseLimits: the sizes a parser accepts before it refuses, with the source of each default.

An attacker chooses the sizes of what we parse, so every dimension has a bound, and hitting one
raises :class:`~sipwarden.sip.errors.SipParseError` with the status a server would answer.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "ParseLimits"]


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Upper bounds, all in bytes or counts. Defaults cite their anchor."""

    #: Whole message (start line + headers + body). Over it: ``message_too_large``, 513.
    #: Default 65535: the largest UDP payload and Kamailio's core ``BUF_SIZE``; Kamailio's
    #: default config refuses above ``MSG_MAX_SIZE`` 16384 in script - set that here to match.
    max_message_bytes: int = 65535
    #: Start line plus header block. Over it: ``headers_too_large``, 513. Default 16384, twice
    #: Kamailio sanity's 8192 for all headers (IMS messages carry many P- headers); h11 uses
    #: 16 KiB (``max_incomplete_event_size``) for the same job.
    max_header_bytes: int = 16384
    #: Body. Over it: ``body_too_large``, 413. Default 65535 (anything a datagram can carry).
    max_body_bytes: int = 65535
    #: One header line, folded continuations included. Over it: ``header_line_too_long``, 400.
    #: Default 2048 as Kamailio sanity's per-header size check.
    max_header_line_bytes: int = 2048
    #: Header fields (lines). Over it: ``too_many_headers``, 400. No anchor caps this in
    #: Kamailio; 128 is eight times the fields of a typical trunk INVITE.
    max_headers: int = 128
    #: Via hops, counted over all Via lines and comma-separated values. Over it:
    #: ``too_many_via``, 483. Default 70, RFC 3261 §8.1.1.6's initial Max-Forwards: a message
    #: cannot legally have crossed more proxies than that.
    max_via_hops: int = 70
    #: Request-URI. Over it: ``request_uri_too_long``, 414. Default 512 as Kamailio's default
    #: config ``RURI_MAX_SIZE`` (sanity's per-URI check uses 256).
    max_uri_bytes: int = 512
    #: Method token. Over it: ``method_too_long``, 400. Kamailio sanity uses 32, but RFC 4475
    #: §3.1.1.2's valid method is 43 bytes long, so the default is 64.
    max_method_bytes: int = 64

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ParseLimits.{name} must be a positive integer, not {value!r}")


DEFAULT_LIMITS = ParseLimits()
