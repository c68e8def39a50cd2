"""A small blocking SIP user agent for integration tests (UDP, TCP, TLS).

Enough of RFC 3261 to register and place or answer one call through a proxy: digest
authentication (RFC 2617 / RFC 7616: MD5 or SHA-256, with or without ``qop=auth``), REGISTER,
INVITE with a tiny SDP (100/180/200, or 401/407 then a retry with credentials) → ACK → BYE →
200, the route set from Record-Route (§12.1.2, loose routing only) and the remote target from
Contact, and a UAS mode for the callee (answers INVITE with 180 and 200, BYE with 200).

Sending follows RFC 3263 §4.1 without DNS: the next hop is the first Route (else the Request-URI
of an initial request, else the outbound proxy); its transport is the URI's ``transport``
parameter, TLS for ``sips:``, else UDP. A hop that is the outbound proxy over the same transport
reuses the flow to it (the connection for TCP/TLS); another UDP hop is sent from the UA's UDP
socket; another stream hop is an error (:class:`UaError`) rather than a new connection, so a test
notices a Route it did not expect.

Bounded everywhere: every receive has a timeout, UDP requests are retransmitted from T1 = 0.5 s
doubling (RFC 3261 §17.1.1.2) until the transaction's overall deadline, and stream reads are
framed by :class:`sipwarden.sip.StreamFramer` (bounded buffer). Errors are :class:`UaError`
with the message that was expected and what came instead.

Messages are parsed with :func:`sipwarden.sip.parse_message`; everything the UA sends is built
here as text, independently of the gateway's code.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sipwarden.sip import (
    NEED_DATA,
    FramerEvent,
    Request,
    Response,
    SipParseError,
    StreamFramer,
    Uri,
    parse_message,
    parse_uri,
)

__all__ = [
    "Dialog",
    "SipUA",
    "UaError",
]

#: RFC 3261 §17.1.1.1 T1 (an RTT estimate) and the cap of the retransmission interval (T2).
T1_S = 0.5
T2_S = 4.0
#: A whole transaction (all retransmissions) gives up after this, well below Timer B's 32 s.
TRANSACTION_TIMEOUT_S = 5.0
#: Largest datagram or stream read.
RECV_BYTES = 65535

_SDP = (
    "v=0\r\no=- {sess} {sess} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class UaError(AssertionError):
    """The peer did not answer as a SIP UA expects (an AssertionError: pytest shows it)."""


# -- transports --------------------------------------------------------------------------------


class Channel:
    """Where one request is sent and its responses are read: a UDP destination or a stream."""

    transport: str  # "UDP", "TCP", "TLS" as in Via
    local: tuple[str, int]
    #: True when the UA retransmits (unreliable transport).
    unreliable: bool

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def recv(self, timeout: float) -> tuple[bytes, tuple[str, int]] | None:
        raise NotImplementedError

    def reply_to(self, data: bytes, dest: tuple[str, int]) -> None:
        raise NotImplementedError


class UdpChannel(Channel):
    transport = "UDP"
    unreliable = True

    def __init__(self, sock: socket.socket, dest: tuple[str, int]) -> None:
        self.sock = sock
        self.dest = dest
        host, port = sock.getsockname()[:2]
        self.local = (str(host), int(port))

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.dest)

    def recv(self, timeout: float) -> tuple[bytes, tuple[str, int]] | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, addr = self.sock.recvfrom(RECV_BYTES)
        except TimeoutError:
            return None
        return data, (str(addr[0]), int(addr[1]))

    def reply_to(self, data: bytes, dest: tuple[str, int]) -> None:
        self.sock.sendto(data, dest)


class StreamChannel(Channel):
    """A TCP or TLS connection; messages framed by Content-Length (RFC 3261 §18.3)."""

    unreliable = False

    def __init__(self, sock: socket.socket, transport: str) -> None:
        self.sock = sock
        self.transport = transport
        host, port = sock.getsockname()[:2]
        self.local = (str(host), int(port))
        peer = sock.getpeername()
        self.peer = (str(peer[0]), int(peer[1]))
        self.framer = StreamFramer()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _next(self) -> bytes | None:
        while True:
            item = self.framer.next_message()
            if item is NEED_DATA:
                return None
            if isinstance(item, FramerEvent):
                if item is FramerEvent.PING:  # RFC 5626 §4.4.1: answer a ping with a pong
                    self.sock.sendall(b"\r\n")
                continue
            return item

    def recv(self, timeout: float) -> tuple[bytes, tuple[str, int]] | None:
        deadline = time.monotonic() + timeout
        while True:
            message = self._next()
            if message is not None:
                return message, self.peer
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(RECV_BYTES)
            except (TimeoutError, ssl.SSLWantReadError):
                return None
            if not chunk:
                raise UaError(f"{self.transport} connection to {self.peer} closed by the peer")
            self.framer.feed(chunk)

    def reply_to(self, data: bytes, dest: tuple[str, int]) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        if isinstance(self.sock, ssl.SSLSocket):
            try:
                self.sock.settimeout(1.0)
                self.sock.unwrap()
            except (OSError, ValueError):
                pass  # the peer may already be gone; closing below is what matters
        self.sock.close()


def _ip_literal(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError as exc:
        raise UaError(f"next hop {host!r} is not an IP literal (this UA does no DNS)") from exc


def next_hop(uri: Uri) -> tuple[str, str, int]:
    """(transport, ip, port) for a URI per RFC 3263 §4.1/§4.2 without DNS."""
    transport = uri.param("transport")
    if transport:
        transport = transport.upper()
    elif uri.scheme == "sips":
        transport = "TLS"
    else:
        transport = "UDP"
    if transport not in ("UDP", "TCP", "TLS"):
        raise UaError(f"next hop {uri.raw!r}: transport {transport!r} not supported")
    default_port = 5061 if transport == "TLS" else 5060
    return transport, _ip_literal(uri.host), uri.port or default_port


# -- digest (RFC 2617 / RFC 7616) -------------------------------------------------------------


#: RFC 7616 §3.3 algorithm names → hashlib names.
_HASHES = {"MD5": "md5", "SHA-256": "sha256"}


def _h(algorithm: str, text: str) -> str:
    return hashlib.new(_HASHES[algorithm], text.encode()).hexdigest()


def digest_authorization(
    challenge: dict[str, str], method: str, uri: str, user: str, password: str, nc: int = 1
) -> str:
    """The Authorization / Proxy-Authorization value answering one digest challenge."""
    algorithm = challenge.get("algorithm", "MD5").upper()
    if algorithm not in _HASHES:
        raise UaError(f"digest algorithm {algorithm!r} not supported by the test UA")
    realm = challenge.get("realm", "")
    nonce = challenge.get("nonce", "")
    ha1 = _h(algorithm, f"{user}:{realm}:{password}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    offered = [q.strip().lower() for q in challenge.get("qop", "").split(",") if q.strip()]
    fields = [
        f'username="{user}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        f"algorithm={algorithm}",
    ]
    if "auth" in offered:
        cnonce = secrets.token_hex(8)
        nc_text = f"{nc:08x}"
        response = _h(algorithm, f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
        fields += ["qop=auth", f"nc={nc_text}", f'cnonce="{cnonce}"']
    elif offered:
        raise UaError(f"digest qop {offered} offered without 'auth'")
    else:
        response = _h(algorithm, f"{ha1}:{nonce}:{ha2}")  # RFC 2069 compatibility
    fields.append(f'response="{response}"')
    if "opaque" in challenge:
        fields.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(fields)


# -- the user agent ----------------------------------------------------------------------------


@dataclass
class Dialog:
    """A confirmed dialog from the UAC side (RFC 3261 §12.1.2)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: list[str]
    cseq: int
    #: Every response to the INVITE, in arrival order (``(status, raw bytes)``).
    invite_responses: list[Response] = field(default_factory=list)


def _header_block(headers: list[tuple[str, str]]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers)


def _parse(data: bytes) -> Request | Response | None:
    """A message, or None for what is not one (a keep-alive, garbage): skipped, not fatal."""
    try:
        return parse_message(data)
    except SipParseError:
        return None


def _tag() -> str:
    return secrets.token_hex(6)


def _branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


class SipUA:
    """One user (``user@domain``) behind an outbound proxy ``proxy`` over ``transport``."""

    def __init__(
        self,
        user: str,
        password: str,
        domain: str,
        proxy: tuple[str, int],
        transport: str = "UDP",
        *,
        local_ip: str = "127.0.0.1",
        tls_context: ssl.SSLContext | None = None,
        user_agent: str = "sipwarden-e2e-ua/1",
    ) -> None:
        self.user = user
        self.password = password
        self.domain = domain
        self.proxy = proxy
        self.transport = transport.upper()
        self.local_ip = local_ip
        self.user_agent = user_agent
        self.tls_context = tls_context
        self._cseq = 0
        self._udp: socket.socket | None = None
        self.flow = self._open_flow()
        #: Requests this UA received as a UAS, in arrival order.
        self.received_requests: list[Request] = []
        #: Where each of them came from.
        self.received_from: list[tuple[str, int]] = []
        self._answered: dict[str, tuple[str, bytes]] = {}

    # -- flows
    def _udp_socket(self) -> socket.socket:
        if self._udp is None:
            self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._udp.bind((self.local_ip, 0))
        return self._udp

    def _open_flow(self) -> Channel:
        if self.transport == "UDP":
            return UdpChannel(self._udp_socket(), self.proxy)
        if self.transport not in ("TCP", "TLS"):
            raise UaError(f"transport {self.transport!r} not supported")
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.settimeout(TRANSACTION_TIMEOUT_S)
        try:
            raw.bind((self.local_ip, 0))
            raw.connect(self.proxy)
            sock: socket.socket = raw
            if self.transport == "TLS":
                if self.tls_context is None:
                    raise UaError("TLS needs tls_context (tests.tls.client_tls_context())")
                sock = self.tls_context.wrap_socket(raw, server_hostname=self.proxy[0])
        except BaseException:
            raw.close()
            raise
        return StreamChannel(sock, self.transport)

    def channel_for(self, uri_text: str) -> Channel:
        """The channel a request whose next hop is ``uri_text`` goes out on (RFC 3263)."""
        transport, ip, port = next_hop(parse_uri(uri_text))
        if (ip, port) == self.proxy and transport == self.transport:
            return self.flow
        if transport == "UDP":
            return UdpChannel(self._udp_socket(), (ip, port))
        raise UaError(
            f"next hop {uri_text!r} is {transport} to {ip}:{port}, not the flow to the proxy "
            f"{self.proxy} over {self.transport}; this UA opens no other connections"
        )

    def close(self) -> None:
        if isinstance(self.flow, StreamChannel):
            self.flow.close()
        if self._udp is not None:
            self._udp.close()

    def __enter__(self) -> SipUA:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building
    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    def contact(self, channel: Channel | None = None) -> str:
        chan = channel or self.flow
        host, port = chan.local
        suffix = "" if chan.transport == "UDP" else f";transport={chan.transport.lower()}"
        return f"<sip:{self.user}@{host}:{port}{suffix}>"

    def _via(self, channel: Channel, branch: str) -> str:
        host, port = channel.local
        return f"SIP/2.0/{channel.transport} {host}:{port};branch={branch};rport"

    def build_request(
        self,
        method: str,
        request_uri: str,
        channel: Channel,
        *,
        call_id: str,
        from_tag: str,
        to: str,
        cseq: int,
        branch: str | None = None,
        extra: list[tuple[str, str]] | None = None,
        body: str = "",
        content_type: str | None = None,
    ) -> tuple[bytes, str]:
        """The request's bytes and its branch."""
        branch = branch or _branch()
        headers = [
            ("Via", self._via(channel, branch)),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={from_tag}"),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
            ("User-Agent", self.user_agent),
        ]
        headers += extra or []
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        data = body.encode()
        headers.append(("Content-Length", str(len(data))))
        start = f"{method} {request_uri} SIP/2.0\r\n"
        return (start + _header_block(headers) + "\r\n").encode() + data, branch

    # -- client transactions
    def transaction(
        self,
        channel: Channel,
        data: bytes,
        branch: str,
        method: str,
        *,
        timeout: float = TRANSACTION_TIMEOUT_S,
        on_provisional: Callable[[Response], None] | None = None,
    ) -> Response | None:
        """Send a request and return its final response (None: none within ``timeout``).

        Over UDP the request is retransmitted (T1 doubling up to T2) until a provisional or
        final response arrives; messages of other transactions are skipped.
        """
        deadline = time.monotonic() + timeout
        interval = T1_S
        channel.send(data)
        next_send = time.monotonic() + interval
        provisional = False
        while (now := time.monotonic()) < deadline:
            retransmitting = channel.unreliable and not provisional
            wait = (min(deadline, next_send) if retransmitting else deadline) - now
            got = channel.recv(max(wait, 0.001))
            if got is None:
                if retransmitting and time.monotonic() >= next_send:
                    channel.send(data)
                    interval = min(interval * 2, T2_S)
                    next_send = time.monotonic() + interval
                continue
            message = _parse(got[0])
            if not isinstance(message, Response):
                continue
            vias = message.via
            cseq = message.cseq
            if not vias or vias[0].branch != branch or cseq is None or cseq.method != method:
                continue
            if message.status < 200:
                provisional = True
                if on_provisional is not None:
                    on_provisional(message)
                continue
            return message
        return None

    def _next_cseq(self) -> int:
        self._cseq += 1
        return self._cseq

    def register(self, expires: int = 120, timeout: float = TRANSACTION_TIMEOUT_S) -> Response:
        """REGISTER the flow's contact, answering one digest challenge; the final response."""
        call_id = secrets.token_hex(10)
        from_tag = _tag()
        uri = f"sip:{self.domain}"
        auth: list[tuple[str, str]] = []
        for _attempt in range(2):
            data, branch = self.build_request(
                "REGISTER", uri, self.flow, call_id=call_id, from_tag=from_tag,
                to=f"<{self.aor}>", cseq=self._next_cseq(),
                extra=[("Contact", self.contact()), ("Expires", str(expires)), *auth],
            )  # fmt: skip
            response = self.transaction(self.flow, data, branch, "REGISTER", timeout=timeout)
            if response is None:
                raise UaError(f"REGISTER {self.aor}: no final response within {timeout} s")
            if response.status not in (401, 407) or auth:
                return response
            auth = [self._credentials(response, "REGISTER", uri)]
        raise AssertionError("unreachable")

    def _credentials(self, response: Response, method: str, uri: str) -> tuple[str, str]:
        challenges = [c for c in response.challenges if c.is_digest]
        if not challenges:
            raise UaError(f"{response.status} without a digest challenge:\n{response.raw!r}")
        header = "Authorization" if response.status == 401 else "Proxy-Authorization"
        value = digest_authorization(challenges[0].params, method, uri, self.user, self.password)
        return header, value

    def invite(
        self, callee: str, timeout: float = TRANSACTION_TIMEOUT_S
    ) -> tuple[Dialog | None, Response]:
        """INVITE ``callee@domain`` via the proxy; on 2xx ACK it and return the dialog.

        A 401/407 is ACKed (same branch, §17.1.1.3) and the INVITE retried once with
        credentials. Returns (dialog or None, the final response).
        """
        call_id = secrets.token_hex(10)
        from_tag = _tag()
        target = f"sip:{callee}@{self.domain}"
        to = f"<{target}>"
        sdp = _SDP.format(sess=secrets.randbelow(10**9), port=40000)
        auth: list[tuple[str, str]] = []
        responses: list[Response] = []
        for _attempt in range(2):
            cseq = self._next_cseq()
            data, branch = self.build_request(
                "INVITE", target, self.flow, call_id=call_id, from_tag=from_tag, to=to,
                cseq=cseq, extra=[("Contact", self.contact()), *auth], body=sdp,
                content_type="application/sdp",
            )  # fmt: skip
            final = self.transaction(
                self.flow, data, branch, "INVITE", timeout=timeout,
                on_provisional=responses.append,
            )  # fmt: skip
            if final is None:
                raise UaError(f"INVITE {target}: no final response within {timeout} s")
            responses.append(final)
            if 200 <= final.status < 300:
                return self._confirm(final, call_id, from_tag, target, cseq, responses), final
            # RFC 3261 §17.1.1.3: the ACK of a non-2xx answer is part of the INVITE transaction.
            self._ack_failure(final, target, branch, call_id, from_tag, cseq)
            if final.status not in (401, 407) or auth:
                return None, final
            auth = [self._credentials(final, "INVITE", target)]
        raise AssertionError("unreachable")

    def _ack_failure(
        self, final: Response, target: str, branch: str, call_id: str, from_tag: str, cseq: int
    ) -> None:
        to = final.headers.get("To") or ""
        data, _ = self.build_request(
            "ACK", target, self.flow, call_id=call_id, from_tag=from_tag, to=to, cseq=cseq,
            branch=branch,
        )  # fmt: skip
        self.flow.send(data)

    def _confirm(
        self,
        final: Response,
        call_id: str,
        from_tag: str,
        target: str,
        cseq: int,
        responses: list[Response],
    ) -> Dialog:
        to = final.to
        contacts = final.contact
        if to is None or not to.tag or not contacts:
            raise UaError(f"2xx to INVITE without To tag or Contact:\n{final.raw!r}")
        dialog = Dialog(
            call_id=call_id,
            local_tag=from_tag,
            remote_tag=to.tag,
            local_uri=self.aor,
            remote_uri=target,
            remote_target=contacts[0].uri_text,
            # §12.1.2: the UAC's route set is the Record-Route list in reverse order.
            route_set=[rr.uri_text for rr in reversed(final.record_route)],
            cseq=cseq,
            invite_responses=responses,
        )
        self.send_in_dialog(dialog, "ACK", cseq=cseq)
        return dialog

    def _in_dialog(self, dialog: Dialog, method: str, cseq: int) -> tuple[bytes, str, Channel]:
        routes = dialog.route_set
        if routes:
            first = parse_uri(routes[0])
            if not first.has_param("lr"):
                raise UaError(f"strict router in the route set {routes} (not supported)")
            hop = routes[0]
        else:
            hop = dialog.remote_target
        channel = self.channel_for(hop)
        extra = [("Route", f"<{r}>") for r in routes]
        data, branch = self.build_request(
            method, dialog.remote_target, channel, call_id=dialog.call_id,
            from_tag=dialog.local_tag, to=f"<{dialog.remote_uri}>;tag={dialog.remote_tag}",
            cseq=cseq, extra=extra,
        )  # fmt: skip
        return data, branch, channel

    def send_in_dialog(self, dialog: Dialog, method: str, *, cseq: int) -> tuple[str, Channel]:
        """Send one in-dialog request without waiting (the ACK of a 2xx)."""
        data, branch, channel = self._in_dialog(dialog, method, cseq)
        channel.send(data)
        return branch, channel

    def bye(self, dialog: Dialog, timeout: float = TRANSACTION_TIMEOUT_S) -> Response:
        """End the call; the BYE's final response."""
        dialog.cseq += 1
        data, branch, channel = self._in_dialog(dialog, "BYE", dialog.cseq)
        final = self.transaction(channel, data, branch, "BYE", timeout=timeout)
        if final is None:
            raise UaError(f"BYE in dialog {dialog.call_id}: no final response within {timeout} s")
        return final

    # -- server side (the callee)
    def serve(self, stop: threading.Event, deadline_s: float = 30.0) -> None:
        """Answer requests on the flow until ``stop`` is set (or ``deadline_s`` passes):
        INVITE → 180 then 200 with SDP, BYE/CANCEL/OPTIONS → 200, ACK recorded only."""
        until = time.monotonic() + deadline_s
        while not stop.is_set() and time.monotonic() < until:
            got = self.flow.recv(0.1)
            if got is None:
                continue
            data, source = got
            message = _parse(data)
            if isinstance(message, Request):
                self.received_requests.append(message)
                self.received_from.append(source)
                self._answer(message, source)

    def _answer(self, request: Request, source: tuple[str, int]) -> None:
        method = request.method
        if method == "ACK":
            return
        vias = request.via
        key = vias[0].branch if vias and vias[0].branch else ""
        previous = self._answered.get(key)
        if previous is not None:  # a retransmission: the same answer again (§17.2.1)
            self.flow.reply_to(previous[1], source)
            return
        to_tag = _tag()
        if method == "INVITE":
            self.flow.reply_to(self._response(request, 180, "Ringing", to_tag), source)
            sdp = _SDP.format(sess=secrets.randbelow(10**9), port=40002)
            answer = self._response(request, 200, "OK", to_tag, body=sdp)
        else:
            answer = self._response(request, 200, "OK", to_tag)
        self._answered[key] = (method, answer)
        self.flow.reply_to(answer, source)

    def _response(
        self, request: Request, status: int, reason: str, to_tag: str, body: str = ""
    ) -> bytes:
        h = request.headers
        to = h.get("To") or ""
        if ";tag=" not in to.lower():
            to += f";tag={to_tag}"
        headers = [("Via", v) for v in h.get_all("Via")]
        headers += [("Record-Route", rr) for rr in h.get_all("Record-Route")]
        headers += [
            ("From", h.get("From") or ""),
            ("To", to),
            ("Call-ID", h.get("Call-ID") or ""),
            ("CSeq", h.get("CSeq") or ""),
            ("Server", self.user_agent),
        ]
        if request.method == "INVITE":
            headers.append(("Contact", self.contact()))
        data = body.encode()
        if body:
            headers.append(("Content-Type", "application/sdp"))
        headers.append(("Content-Length", str(len(data))))
        return (f"SIP/2.0 {status} {reason}\r\n" + _header_block(headers) + "\r\n").encode() + data
