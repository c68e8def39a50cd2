"""Parse errors and defects of the SIP core, and the table of their stable codes.

A *fatal* problem raises :class:`SipParseError`; a *non-fatal* one is recorded on
``message.defects`` as a :class:`Defect` and parsing goes on (dnspython's "keep going and record
where", Zeek's named weirds). Every code below is stable: findings, metrics and tests use it, so
renaming one is a conventions change.

Each defect code is either a **violation** (the message breaks RFC 3261 / RFC 4475 rules: a
strict receiver would reject it, and ``sipwarden parse`` exits 1) or a **tolerance** (legal or
commonly accepted, but worth recording, e.g. leading CRLFs or bare-LF line ends).

This module imports nothing but the root error class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sipwarden.errors import SipwardenError

__all__ = ["DEFECT_CODES", "ERROR_CODES", "Defect", "DefectInfo", "SipParseError"]


class DefectInfo(NamedTuple):
    violation: bool
    description: str


#: Non-fatal problems: code -> (violation?, one sentence).
DEFECT_CODES: dict[str, DefectInfo] = {
    # tolerances
    "leading_crlf": DefectInfo(
        False, "Empty lines before the start line (RFC 3261 §7.5 says to ignore them)."
    ),
    "bare_lf_line_ending": DefectInfo(
        False,
        "Lines end in LF instead of CRLF (tolerated as most stacks do; RFC 3261 §7 requires CRLF).",
    ),
    "folded_header": DefectInfo(
        False, "A header value continues on the next line (legal LWS folding, RFC 3261 §7.3.1)."
    ),
    "extra_bytes_after_body": DefectInfo(
        False,
        "A datagram carries bytes after the Content-Length body; they are ignored "
        "(RFC 3261 §18.3).",
    ),
    "unknown_method": DefectInfo(
        False, "The request method is a valid token but not one sipwarden knows."
    ),
    "unknown_uri_scheme": DefectInfo(
        False, "A URI scheme other than sip, sips or tel (legal as absoluteURI)."
    ),
    "missing_branch_cookie": DefectInfo(
        False,
        "The top Via branch is absent, lacks the RFC 3261 magic cookie z9hG4bK, or is the "
        "cookie alone (RFC 4475 §3.2.1).",
    ),
    "missing_max_forwards": DefectInfo(
        False,
        "A request without Max-Forwards (RFC 2543 style, RFC 4475 §3.4.1); a proxy adds "
        "one (RFC 3261 §16.6).",
    ),
    "max_forwards_zero": DefectInfo(
        False, "Max-Forwards is 0: a proxy must not forward the request (RFC 3261 §16.3)."
    ),
    # violations
    "junk_before_start_line": DefectInfo(
        True, "Bytes that are not a start line come before the start line."
    ),
    "missing_header_terminator": DefectInfo(
        True,
        "A datagram ends after its last header line, without the empty line RFC 3261 §7 requires.",
    ),
    "missing_content_length": DefectInfo(
        True, "A body is present but there is no Content-Length (mandatory on streams)."
    ),
    "content_length_mismatch": DefectInfo(
        True, "Content-Length disagrees with the body that is present."
    ),
    "duplicate_content_length": DefectInfo(
        True, "More than one Content-Length header or value (RFC 4475 §3.3.9)."
    ),
    "duplicate_singleton_header": DefectInfo(
        True,
        "A header that may appear only once appears several times or with several values "
        "(RFC 4475 §3.3.8).",
    ),
    "missing_mandatory_header": DefectInfo(
        True,
        "One of To, From, CSeq, Call-ID, Max-Forwards (requests) or Via is missing "
        "(RFC 3261 §8.1.1).",
    ),
    "invalid_header_value": DefectInfo(True, "A known header's value does not match its grammar."),
    "invalid_request_uri": DefectInfo(
        True,
        "The Request-URI does not match RFC 3261 §25 (e.g. <> around it, escaped "
        "headers in a SIP Request-URI, embedded whitespace).",
    ),
    "cseq_method_mismatch": DefectInfo(
        True, "The CSeq method differs from the request method (RFC 3261 §8.1.1.5)."
    ),
    "value_out_of_range": DefectInfo(
        True,
        "A number exceeds its allowed range (CSeq < 2**31, Expires and Max-Forwards "
        "fit 32 bits, status 100-699).",
    ),
    "invalid_utf8": DefectInfo(
        True, "Header text is not valid UTF-8 (RFC 3261 §7.3.1: UTF-8 is the charset)."
    ),
}

#: Fatal problems: code -> one sentence. Carried by SipParseError.code.
ERROR_CODES: dict[str, str] = {
    "empty_message": "No bytes, or only whitespace.",
    "message_too_large": "The message exceeds max_message_bytes.",
    "headers_too_large": "The header block exceeds max_header_bytes.",
    "body_too_large": "The body exceeds max_body_bytes.",
    "header_line_too_long": "One header line exceeds max_header_line_bytes.",
    "too_many_headers": "More header fields than max_headers.",
    "too_many_via": "More Via hops than max_via_hops.",
    "request_uri_too_long": "The Request-URI exceeds max_uri_bytes.",
    "method_too_long": "The method exceeds max_method_bytes.",
    "incomplete_headers": "The header block does not end with an empty line.",
    "invalid_start_line": "The first line is neither a Request-Line nor a Status-Line.",
    "unsupported_version": "A SIP version other than SIP/2.0.",
    "invalid_status_code": "The status code is not three digits from 100 to 699.",
    "invalid_header_line": "A header line has no colon or its name is not a token.",
    "invalid_content_length": "Content-Length is not a non-negative decimal integer.",
    "content_length_exceeds_data": "Content-Length announces more bytes than the message has.",
    "invalid_header_value": "A known header's value does not match its grammar.",
    "invalid_request_uri": "The Request-URI is not a valid URI (raised by msg.request_uri).",
    "framing_error": "A stream cannot be framed into SIP messages.",
}


@dataclass(frozen=True, slots=True)
class Defect:
    """A non-fatal problem: stable ``code``, byte ``offset`` into the message, human ``detail``."""

    code: str
    offset: int
    detail: str

    @property
    def violation(self) -> bool:
        """True when the message breaks the RFC (a strict receiver rejects it)."""
        return DEFECT_CODES[self.code].violation

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "offset": self.offset,
            "detail": self.detail,
            "violation": self.violation,
        }


class SipParseError(SipwardenError):
    """The bytes are not a SIP message sipwarden can represent.

    ``code`` is a stable name from :data:`ERROR_CODES`, ``offset`` the byte offset where the
    problem was found, ``status_hint`` the status a server would answer (h11's
    ``error_status_hint``): 400 by default, 413/513 for size, 414 for a long Request-URI, 483 for
    too many hops, 505 for an unknown SIP version.
    """

    def __init__(self, code: str, offset: int, detail: str, status_hint: int = 400) -> None:
        self.code = code
        self.offset = offset
        self.detail = detail
        self.status_hint = status_hint
        super().__init__(f"{code} at byte {offset}: {detail}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.code, self.offset, self.detail, self.status_hint))
