"""Digest response computation and verification against published vectors (RFC 2069, 2617, 7616).

RFC 8760 (SIP's adoption of the RFC 7616 algorithms) contains no worked examples of its own: it
registers SHA-256 / SHA-512-256 for SIP and defers the arithmetic to RFC 7616, whose §3.9
examples are tested here.
"""

from __future__ import annotations

import hashlib

import pytest

from sipwarden.sip.digest import (
    ALGORITHMS,
    compute_ha1,
    compute_response,
    compute_userhash,
    hash_hex,
    verify_response,
)
from sipwarden.sip.hdr.auth import Credentials, parse_credentials

# RFC 7616 §3.9.1 "Example with SHA-256 and MD5".
RFC7616_1 = {
    "username": "Mufasa",
    "password": "Circle of Life",
    "realm": "http-auth@example.org",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "nc": "00000001",
    "qop": "auth",
}

# RFC 7616 §3.9.2 "Example with SHA-512-256, Charset, and Userhash".
RFC7616_2 = {
    "username": "J\u00e4s\u00f8n Doe",
    "password": "Secret, or not?",
    "realm": "api@example.org",
    "method": "GET",
    "uri": "/doe.json",
    "nonce": "5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK",
    "cnonce": "NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v",
    "nc": "00000001",
    "qop": "auth",
}
# The values printed in RFC 7616 §3.9.2 cannot be reproduced with SHA-512/256 as standardised
# (FIPS 180-4). RFC errata 4897 explains that they came from an early implementation and gives
# the values below, which independent implementations (Go, Rust, JS, C++ digest libraries)
# all reproduce.
RFC7616_2_USERHASH = "793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b"
RFC7616_2_RESPONSE = "3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5"
RFC7616_2_PRINTED_USERHASH = "488869477bf257147b804c45308cd62ac4e25eb717b12b298c79e62dcea254ec"
RFC7616_2_PRINTED_RESPONSE = "ae66e67d6b427bd3f120414a82e4acff38e8ecd9101d6c861229025f607a79dd"


def _rfc7616_response(example: dict[str, str], algorithm: str) -> str:
    return compute_response(
        algorithm=algorithm,
        username=example["username"],
        realm=example["realm"],
        password=example["password"],
        method=example["method"],
        uri=example["uri"],
        nonce=example["nonce"],
        qop=example["qop"],
        nc=example["nc"],
        cnonce=example["cnonce"],
    )


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


# --- published vectors --------------------------------------------------------------------------


def test_rfc7616_3_9_1_md5_response() -> None:
    assert _rfc7616_response(RFC7616_1, "MD5") == "8ca523f5e9506fed4657c9700eebdbec"


def test_rfc7616_3_9_1_sha256_response() -> None:
    assert (
        _rfc7616_response(RFC7616_1, "SHA-256")
        == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


def test_rfc7616_3_9_2_sha512_256_userhash_matches_errata_4897() -> None:
    userhash = compute_userhash(
        algorithm="SHA-512-256", username=RFC7616_2["username"], realm=RFC7616_2["realm"]
    )
    assert userhash == RFC7616_2_USERHASH
    assert userhash != RFC7616_2_PRINTED_USERHASH


def test_rfc7616_3_9_2_sha512_256_response_matches_errata_4897() -> None:
    response = _rfc7616_response(RFC7616_2, "SHA-512-256")
    assert response == RFC7616_2_RESPONSE
    assert response != RFC7616_2_PRINTED_RESPONSE


def test_rfc7616_3_9_2_userhash_credentials_verify_with_clear_username() -> None:
    # The RFC's Authorization header, with errata 4897's values.
    credentials = parse_credentials(
        f'Digest username="{RFC7616_2_USERHASH}", realm="api@example.org", uri="/doe.json", '
        'algorithm=SHA-512-256, nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", '
        'nc=00000001, cnonce="NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v", qop=auth, '
        f'response="{RFC7616_2_RESPONSE}", '
        'opaque="HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS", userhash=true'
    )
    assert credentials.userhash
    clear = RFC7616_2["username"]
    assert verify_response(credentials, password="Secret, or not?", method="GET", username=clear)
    # Without the clear username a userhash response cannot be checked.
    assert not verify_response(credentials, password="Secret, or not?", method="GET")
    # A clear username that does not hash to the header's username is refused.
    assert not verify_response(
        credentials, password="Secret, or not?", method="GET", username="Jason Doe"
    )


def test_rfc2069_no_qop_md5_response_matches_errata() -> None:
    # RFC 2069 §2.4 example (RFC 2617 §3.2.2.1 compatibility form, no qop). The RFC prints
    # e966c932a9242554e42c8ee200cec7f6, which its errata corrects to the value below.
    response = compute_response(
        username="Mufasa",
        realm="testrealm@host.com",
        password="CircleOfLife",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
    )
    assert response == "1949323746fe6a43ef61f9606e7febea"


def test_rfc2617_3_5_md5_qop_auth_response() -> None:
    response = compute_response(
        username="Mufasa",
        realm="testrealm@host.com",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


# --- formulas checked against a hand-built computation -----------------------------------------


def test_no_qop_sip_register_is_h_of_ha1_nonce_ha2() -> None:
    ha1 = _md5("alice:atlanta.example.com:s3cret")
    ha2 = _md5("REGISTER:sip:atlanta.example.com")
    expected = _md5(f"{ha1}:abc:{ha2}")
    got = compute_response(
        username="alice",
        realm="atlanta.example.com",
        password="s3cret",
        method="REGISTER",
        uri="sip:atlanta.example.com",
        nonce="abc",
    )
    assert got == expected


def test_md5_sess_ha1_binds_nonce_and_cnonce() -> None:
    inner = _md5("alice:atlanta.example.com:s3cret")
    expected_ha1 = _md5(f"{inner}:n0nce:cn0nce")
    assert (
        compute_ha1(
            algorithm="MD5-sess",
            username="alice",
            realm="atlanta.example.com",
            password="s3cret",
            nonce="n0nce",
            cnonce="cn0nce",
        )
        == expected_ha1
    )
    ha2 = _md5("INVITE:sip:bob@biloxi.example.com")
    expected = _md5(f"{expected_ha1}:n0nce:00000002:cn0nce:auth:{ha2}")
    got = compute_response(
        algorithm="MD5-sess",
        username="alice",
        realm="atlanta.example.com",
        password="s3cret",
        method="INVITE",
        uri="sip:bob@biloxi.example.com",
        nonce="n0nce",
        qop="auth",
        nc="00000002",
        cnonce="cn0nce",
    )
    assert got == expected


def test_sess_algorithm_without_cnonce_is_value_error() -> None:
    with pytest.raises(ValueError, match="cnonce"):
        compute_ha1(algorithm="SHA-256-sess", username="u", realm="r", password="p", nonce="n")


def test_auth_int_hashes_the_body() -> None:
    body = b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.1\r\n"
    ha1 = hashlib.sha256(b"alice:atlanta.example.com:s3cret").hexdigest()
    body_hash = hashlib.sha256(body).hexdigest()
    ha2 = hashlib.sha256(f"INVITE:sip:bob@biloxi.example.com:{body_hash}".encode()).hexdigest()
    expected = hashlib.sha256(f"{ha1}:n:00000001:c:auth-int:{ha2}".encode()).hexdigest()

    def response(qop: str, body: bytes) -> str:
        return compute_response(
            algorithm="SHA-256",
            username="alice",
            realm="atlanta.example.com",
            password="s3cret",
            method="INVITE",
            uri="sip:bob@biloxi.example.com",
            nonce="n",
            qop=qop,
            nc="00000001",
            cnonce="c",
            body=body,
        )

    assert response("auth-int", body) == expected
    assert response("auth-int", body + b"tampered") != expected
    # auth ignores the body; auth-int differs from auth even for an empty body.
    assert response("auth", body) == response("auth", b"")
    assert response("auth", b"") != response("auth-int", b"")


def test_qop_without_nc_or_cnonce_is_value_error() -> None:
    with pytest.raises(ValueError, match="nc and cnonce"):
        compute_response(
            username="u", realm="r", password="p", method="M", uri="u", nonce="n", qop="auth"
        )


def test_unknown_qop_is_value_error() -> None:
    with pytest.raises(ValueError, match="unsupported qop"):
        compute_response(
            username="u",
            realm="r",
            password="p",
            method="M",
            uri="u",
            nonce="n",
            qop="auth-conf",
            nc="00000001",
            cnonce="c",
        )


# --- algorithms ---------------------------------------------------------------------------------


def test_algorithms_lists_the_six_rfc8760_names() -> None:
    assert ALGORITHMS == (
        "MD5",
        "MD5-sess",
        "SHA-256",
        "SHA-256-sess",
        "SHA-512-256",
        "SHA-512-256-sess",
    )


@pytest.mark.parametrize("name", [*ALGORITHMS, "md5", "sha-256", "Sha-512-256-Sess"])
def test_hash_hex_accepts_every_algorithm_case_insensitively(name: str) -> None:
    assert len(hash_hex(name, b"abc")) in (32, 64)


def test_hash_hex_sha512_256_is_not_truncated_sha512() -> None:
    # RFC 7616 §3.2: SHA-512/256 has its own initial values (FIPS 180-4), so the digest of "abc"
    # is the FIPS 180-4 test vector, not the first half of SHA-512("abc").
    got = hash_hex("SHA-512-256", b"abc")
    assert got == "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
    assert got != hashlib.sha512(b"abc").hexdigest()[:64]


@pytest.mark.parametrize("name", ["SHA-1", "SHA-512", "AKAv1-MD5", "", "MD5 "])
def test_unsupported_algorithm_is_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="unsupported digest algorithm"):
        hash_hex(name, b"")
    with pytest.raises(ValueError, match="unsupported digest algorithm"):
        compute_response(
            algorithm=name, username="u", realm="r", password="p", method="M", uri="u", nonce="n"
        )


# --- verify_response ----------------------------------------------------------------------------


def _sip_credentials(
    *,
    algorithm: str = "MD5",
    qop: str | None = "auth",
    password: str = "s3cret",
    method: str = "REGISTER",
    body: bytes = b"",
) -> str:
    """A real SIP Authorization value, as a phone would build it."""
    nonce = "4d9b1c2e0001aabbccddeeff"
    cnonce = "0a4f113b"
    uri = "sip:atlanta.example.com"
    response = compute_response(
        algorithm=algorithm,
        username="alice",
        realm="atlanta.example.com",
        password=password,
        method=method,
        uri=uri,
        nonce=nonce,
        qop=qop,
        nc="00000001" if qop else None,
        cnonce=cnonce if qop or algorithm.endswith("-sess") else None,
        body=body,
    )
    value = (
        f'Digest username="alice", realm="atlanta.example.com", nonce="{nonce}", '
        f'uri="{uri}", response="{response}", algorithm={algorithm}'
    )
    if qop:
        value += f', qop={qop}, nc=00000001, cnonce="{cnonce}"'
    elif algorithm.endswith("-sess"):
        value += f', cnonce="{cnonce}"'
    return value


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("qop", [None, "auth", "auth-int"])
def test_sip_authorization_round_trip_verifies(algorithm: str, qop: str | None) -> None:
    body = b"v=0\r\n"
    credentials = parse_credentials(_sip_credentials(algorithm=algorithm, qop=qop, body=body))
    assert verify_response(credentials, password="s3cret", method="REGISTER", body=body)


def test_verify_response_false_for_wrong_password() -> None:
    credentials = parse_credentials(_sip_credentials())
    assert verify_response(credentials, password="s3cret", method="REGISTER")
    assert not verify_response(credentials, password="s3cre", method="REGISTER")


def test_verify_response_false_for_wrong_method() -> None:
    credentials = parse_credentials(_sip_credentials(method="REGISTER"))
    assert not verify_response(credentials, password="s3cret", method="INVITE")


def test_verify_response_false_for_tampered_nonce() -> None:
    value = _sip_credentials().replace("4d9b1c2e0001", "4d9b1c2e0002")
    assert not verify_response(parse_credentials(value), password="s3cret", method="REGISTER")


def test_verify_response_false_for_tampered_body_with_auth_int() -> None:
    credentials = parse_credentials(_sip_credentials(qop="auth-int", body=b"v=0\r\n"))
    assert not verify_response(credentials, password="s3cret", method="REGISTER", body=b"v=1\r\n")


def test_verify_response_accepts_upper_case_hex() -> None:
    credentials = parse_credentials(_sip_credentials())
    shouted = Credentials(
        credentials.scheme,
        {**credentials.params, "response": (credentials.response or "").upper()},
    )
    assert verify_response(shouted, password="s3cret", method="REGISTER")


def test_verify_response_checks_expected_username_when_given() -> None:
    credentials = parse_credentials(_sip_credentials())
    assert verify_response(credentials, password="s3cret", method="REGISTER", username="alice")
    assert not verify_response(credentials, password="s3cret", method="REGISTER", username="bob")


@pytest.mark.parametrize("dropped", ["nc", "cnonce"])
def test_verify_response_false_when_qop_fields_are_missing(dropped: str) -> None:
    credentials = parse_credentials(_sip_credentials())
    params = {k: v for k, v in credentials.params.items() if k != dropped}
    assert not verify_response(Credentials("Digest", params), password="s3cret", method="REGISTER")


def test_verify_response_false_for_sess_without_cnonce() -> None:
    credentials = parse_credentials(_sip_credentials(algorithm="MD5-sess", qop=None))
    params = {k: v for k, v in credentials.params.items() if k != "cnonce"}
    assert not verify_response(Credentials("Digest", params), password="s3cret", method="REGISTER")


@pytest.mark.parametrize(
    ("key", "value"),
    [("algorithm", "SHA-1"), ("qop", "auth-conf"), ("response", "ünïcode"), ("response", "")],
)
def test_verify_response_false_for_unusable_fields(key: str, value: str) -> None:
    credentials = parse_credentials(_sip_credentials())
    tampered = Credentials("Digest", {**credentials.params, key: value})
    assert not verify_response(tampered, password="s3cret", method="REGISTER")


def test_verify_response_false_for_non_digest_or_incomplete_credentials() -> None:
    other = parse_credentials("NoOneKnowsThisScheme opaque-data=here")
    assert not verify_response(other, password="x", method="REGISTER")
    bare = Credentials("Digest", {"username": "alice"})
    assert not verify_response(bare, password="x", method="REGISTER")
