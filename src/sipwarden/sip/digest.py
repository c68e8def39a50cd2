"""Digest access authentication arithmetic: computing and verifying ``response`` values.

This module owns the hash side of SIP Digest authentication (RFC 3261 §22.4, updated by RFC 8760
to use the RFC 7616 algorithms): HA1 / HA2 / response for MD5, SHA-256 and SHA-512-256 and their
``-sess`` variants, the three qop modes (absent, ``auth``, ``auth-int``), the RFC 7616 §3.4.4
``userhash``, and a constant-time check of received credentials. Parsing the header values is
:mod:`sipwarden.sip.hdr.auth`'s job.

Every string is encoded as UTF-8 before hashing: RFC 3261 §7.3.1 makes UTF-8 SIP's charset and
RFC 7616 §4 names it the only charset a server may announce.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sipwarden.sip.hdr.auth import Credentials

__all__ = [
    "ALGORITHMS",
    "compute_ha1",
    "compute_response",
    "compute_userhash",
    "hash_hex",
    "verify_response",
]

#: The algorithms RFC 8760 §2.1 lets SIP use (IANA "HTTP Digest Hash Algorithms", RFC 7616 §6.1),
#: in their canonical spelling.
ALGORITHMS: tuple[str, ...] = (
    "MD5",
    "MD5-sess",
    "SHA-256",
    "SHA-256-sess",
    "SHA-512-256",
    "SHA-512-256-sess",
)

# Upper-cased name -> (hashlib name, is a -sess variant). Algorithm values are tokens and ABNF
# literals are case-insensitive (RFC 2234 §2.3), so "md5" and "sha-256" are accepted too.
# SHA-512-256 is SHA-512/256 of FIPS 180-4 (its own initial values), not SHA-512 cut in half
# (RFC 7616 §3.2): hashlib's "sha512_256" is that function.
_ALGORITHMS: dict[str, tuple[str, bool]] = {
    "MD5": ("md5", False),
    "MD5-SESS": ("md5", True),
    "SHA-256": ("sha256", False),
    "SHA-256-SESS": ("sha256", True),
    "SHA-512-256": ("sha512_256", False),
    "SHA-512-256-SESS": ("sha512_256", True),
}


def _lookup(algorithm: str) -> tuple[str, bool]:
    found = _ALGORITHMS.get(algorithm.upper())
    if found is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return found


def _h(hash_name: str, text: str) -> str:
    return hashlib.new(hash_name, text.encode("utf-8")).hexdigest()


def hash_hex(algorithm: str, data: bytes) -> str:
    """H(data) as lower-case hex for a Digest algorithm name (``-sess`` names use their base hash).

    Raises ValueError for a name outside :data:`ALGORITHMS` (compared case-insensitively).
    """
    hash_name, _sess = _lookup(algorithm)
    return hashlib.new(hash_name, data).hexdigest()


def compute_ha1(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    nonce: str = "",
    cnonce: str = "",
) -> str:
    """HA1 = H(A1) (RFC 7616 §3.4.2).

    A1 = username ":" realm ":" password; for a ``-sess`` algorithm
    A1 = H(username ":" realm ":" password) ":" nonce ":" cnonce, which needs both nonces.
    ``username`` is always the clear name, also when the header carries a userhash.
    """
    hash_name, sess = _lookup(algorithm)
    ha1 = _h(hash_name, f"{username}:{realm}:{password}")
    if sess:
        if not nonce or not cnonce:
            # RFC 2617 §3.2.2.2: the session key binds the server and client nonces; without
            # them the -sess value is not defined.
            raise ValueError(f"{algorithm} needs both nonce and cnonce")
        ha1 = _h(hash_name, f"{ha1}:{nonce}:{cnonce}")
    return ha1


def _response_from_ha1(
    hash_name: str,
    ha1: str,
    *,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
    body: bytes,
) -> str:
    if qop is None:
        # RFC 2617 §3.2.2.1 compatibility mode (no qop), which RFC 3261 §22.4 keeps for
        # RFC 2069 peers: response = H(HA1 ":" nonce ":" HA2), HA2 = H(method ":" uri).
        return _h(hash_name, f"{ha1}:{nonce}:{_h(hash_name, f'{method}:{uri}')}")
    kind = qop.lower()
    if kind == "auth":
        # RFC 7616 §3.4.3: A2 = Method ":" request-uri.
        ha2 = _h(hash_name, f"{method}:{uri}")
    elif kind == "auth-int":
        # RFC 7616 §3.4.3: A2 = Method ":" request-uri ":" H(entity-body); for SIP the body is
        # the message body, and an empty body hashes the empty string (RFC 3261 §22.4).
        body_hash = hashlib.new(hash_name, body).hexdigest()
        ha2 = _h(hash_name, f"{method}:{uri}:{body_hash}")
    else:
        raise ValueError(f"unsupported qop {qop!r}")
    if nc is None or cnonce is None:
        raise ValueError(f"qop={qop} needs nc and cnonce")
    # RFC 7616 §3.4.1: response = KD(HA1, nonce ":" nc ":" cnonce ":" qop ":" HA2), with the
    # values exactly as sent on the wire.
    return _h(hash_name, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def compute_response(
    *,
    algorithm: str = "MD5",
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value a client sends (RFC 7616 §3.4.1, RFC 3261 §22.4).

    ``qop`` None is the RFC 2617 compatibility form; ``"auth"`` and ``"auth-int"`` need ``nc``
    and ``cnonce``; ``"auth-int"`` also hashes ``body``. ``username`` is the clear name even
    when the header will carry a userhash. Raises ValueError for an unknown algorithm or qop or
    a missing ``nc`` / ``cnonce``.
    """
    hash_name, _sess = _lookup(algorithm)
    ha1 = compute_ha1(
        algorithm=algorithm,
        username=username,
        realm=realm,
        password=password,
        nonce=nonce,
        cnonce=cnonce or "",
    )
    return _response_from_ha1(
        hash_name,
        ha1,
        method=method,
        uri=uri,
        nonce=nonce,
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        body=body,
    )


def compute_userhash(*, algorithm: str, username: str, realm: str) -> str:
    """The hashed username, H(username ":" realm) (RFC 7616 §3.4.4)."""
    hash_name, _sess = _lookup(algorithm)
    return _h(hash_name, f"{username}:{realm}")


def _same(received: str, expected: str) -> bool:
    # hmac.compare_digest only takes str when it is ASCII; the received value is attacker text,
    # so compare bytes. Hex digits are case-insensitive in value; RFC 3261 §25.1 asks senders
    # for lower-case (LHEX), and lower-casing the received text leaks nothing about the secret.
    return hmac.compare_digest(received.lower().encode("utf-8"), expected.encode("utf-8"))


def verify_response(
    credentials: Credentials,
    *,
    password: str,
    method: str,
    body: bytes = b"",
    username: str | None = None,
) -> bool:
    """True when ``credentials`` carry the response ``password`` yields for this request.

    Recomputes the response from the credentials' algorithm, realm, nonce, uri, qop, nc and
    cnonce and compares in constant time. ``method`` is the request's method and ``body`` its
    body (used for qop=auth-int). ``username`` is the clear username: required when the
    credentials use ``userhash`` (the header then carries H(username ":" realm), which must
    match); otherwise, when given, it must equal the header's username.

    Never raises for what the credentials contain: a non-Digest scheme, an unknown algorithm or
    qop, or a field the qop needs being absent all give False. Checking the nonce's freshness
    and the uri against the Request-URI is the caller's job (RFC 3261 §22.4).
    """
    if not credentials.is_digest:
        return False
    algorithm = credentials.algorithm or "MD5"
    realm = credentials.realm
    nonce = credentials.nonce
    uri = credentials.uri
    received = credentials.response
    sent_name = credentials.username
    if realm is None or nonce is None or uri is None or received is None or sent_name is None:
        return False
    if algorithm.upper() not in _ALGORITHMS:
        return False
    if credentials.userhash:
        if username is None:
            return False
        # RFC 7616 §3.4.4: the server looks the user up by H(username ":" realm).
        if not _same(
            sent_name, compute_userhash(algorithm=algorithm, username=username, realm=realm)
        ):
            return False
        clear = username
    else:
        if username is not None and username != sent_name:
            return False
        clear = sent_name
    try:
        expected = compute_response(
            algorithm=algorithm,
            username=clear,
            realm=realm,
            password=password,
            method=method,
            uri=uri,
            nonce=nonce,
            qop=credentials.qop,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
            body=body,
        )
    except ValueError:
        # Unknown qop, qop without nc/cnonce, -sess without cnonce: nothing to compare against.
        return False
    return _same(received, expected)
