"""Parsing of challenge (WWW-/Proxy-Authenticate) and credentials (Authorization) values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.sip.hdr.auth import Challenge, Credentials, parse_challenge, parse_credentials

# --- challenges ---------------------------------------------------------------------------------

CHALLENGES: list[tuple[str, str, dict[str, str]]] = [
    (
        "rfc3261_20_44_example",
        'Digest realm="atlanta.com", domain="sip:boxesbybob.com", qop="auth", '
        'nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5',
        {
            "realm": "atlanta.com",
            "domain": "sip:boxesbybob.com",
            "qop": "auth",
            "nonce": "f84f1cec41e6cbe5aea9c8e88d359",
            "opaque": "",
            "stale": "FALSE",
            "algorithm": "MD5",
        },
    ),
    (
        # Asterisk chan_pjsip: no spaces after commas, lower-case algorithm token.
        "asterisk_pjsip",
        'Digest realm="asterisk",nonce="1700000000/6f1c0e3a2b9d4e5f8a7b6c5d4e3f2a1b",'
        'opaque="5bc3b3a74c1e9a22",algorithm=md5,qop="auth"',
        {
            "realm": "asterisk",
            "nonce": "1700000000/6f1c0e3a2b9d4e5f8a7b6c5d4e3f2a1b",
            "opaque": "5bc3b3a74c1e9a22",
            "algorithm": "md5",
            "qop": "auth",
        },
    ),
    (
        # Asterisk chan_sip puts algorithm first.
        "asterisk_chan_sip",
        'Digest algorithm=MD5, realm="asterisk", nonce="3f6e4d1a"',
        {"algorithm": "MD5", "realm": "asterisk", "nonce": "3f6e4d1a"},
    ),
    (
        # Kamailio auth module: base64-looking nonce, qop offered.
        "kamailio",
        'Digest realm="sip.example.net", nonce="ZXhhbXBsZS1ub25jZS0xMjM0NTY3OA+/9=", qop="auth"',
        {
            "realm": "sip.example.net",
            "nonce": "ZXhhbXBsZS1ub25jZS0xMjM0NTY3OA+/9=",
            "qop": "auth",
        },
    ),
    (
        # FreeSWITCH: UUID nonce.
        "freeswitch",
        'Digest realm="10.0.0.1", nonce="8f6e6a96-1e0a-4c8e-9c2b-3f2e8b0d5a7c", '
        'algorithm=MD5, qop="auth"',
        {
            "realm": "10.0.0.1",
            "nonce": "8f6e6a96-1e0a-4c8e-9c2b-3f2e8b0d5a7c",
            "algorithm": "MD5",
            "qop": "auth",
        },
    ),
    (
        # RFC 8760 §2.3: a UAS offering SHA-256 (one challenge per algorithm).
        "rfc8760_sha256",
        'Digest realm="atlanta.example.com", nonce="abc123", algorithm=SHA-256, '
        'qop="auth,auth-int", userhash=true',
        {
            "realm": "atlanta.example.com",
            "nonce": "abc123",
            "algorithm": "SHA-256",
            "qop": "auth,auth-int",
            "userhash": "true",
        },
    ),
    (
        "odd_whitespace_around_equal_and_comma",
        'Digest realm = "x" ,nonce="y"',
        {"realm": "x", "nonce": "y"},
    ),
    (
        "tabs_and_multiple_spaces",
        'Digest\t realm\t=\t"x"\t,\t  nonce  =  "y"  ',
        {"realm": "x", "nonce": "y"},
    ),
    (
        # RFC 3261 §7.3.1: a header value may fold onto a continuation line.
        "folded_lines",
        'Digest\r\n realm="x",\r\n nonce="y"',
        {"realm": "x", "nonce": "y"},
    ),
    (
        "escaped_quote_and_backslash",
        r'Digest realm="say \"hi\" \\ bye", nonce="n"',
        {"realm": 'say "hi" \\ bye', "nonce": "n"},
    ),
    (
        "comma_and_equal_inside_quotes",
        'Digest realm="a, b=c", nonce="n,o"',
        {"realm": "a, b=c", "nonce": "n,o"},
    ),
    (
        "utf8_in_quoted_realm",
        'Digest realm="Zürich ☎", nonce="n"',
        {"realm": "Zürich ☎", "nonce": "n"},
    ),
    (
        "param_names_are_case_insensitive",
        'Digest REALM="x", Nonce="y", QOP="auth"',
        {"realm": "x", "nonce": "y", "qop": "auth"},
    ),
    (
        "lower_case_scheme",
        'digest realm="x", nonce="y"',
        {"realm": "x", "nonce": "y"},
    ),
    (
        "unknown_extension_param_kept",
        'Digest realm="x", nonce="y", x-vendor=42, charset=UTF-8',
        {"realm": "x", "nonce": "y", "x-vendor": "42", "charset": "UTF-8"},
    ),
]


@pytest.mark.parametrize(
    ("value", "params"),
    [(value, params) for _name, value, params in CHALLENGES],
    ids=[name for name, _value, _params in CHALLENGES],
)
def test_parse_challenge_gives_unquoted_lowercase_params(
    value: str, params: dict[str, str]
) -> None:
    challenge = parse_challenge(value)
    assert challenge.params == params
    assert challenge.is_digest


def test_challenge_properties_of_rfc3261_example() -> None:
    c = parse_challenge(CHALLENGES[0][1])
    assert c.scheme == "Digest"
    assert c.realm == "atlanta.com"
    assert c.nonce == "f84f1cec41e6cbe5aea9c8e88d359"
    assert c.opaque == ""
    assert c.domain == "sip:boxesbybob.com"
    assert c.algorithm == "MD5"
    assert c.qop_options == ("auth",)
    assert c.stale is False
    assert c.userhash is False


def test_challenge_algorithm_defaults_to_md5_for_digest() -> None:
    c = parse_challenge('Digest realm="x", nonce="y"')
    assert c.algorithm == "MD5"
    assert c.opaque is None
    assert c.domain is None
    assert c.qop_options == ()


def test_challenge_qop_list_is_split_and_trimmed() -> None:
    c = parse_challenge('Digest realm="x", nonce="y", qop="auth,auth-int"')
    assert c.qop_options == ("auth", "auth-int")
    c = parse_challenge('Digest realm="x", nonce="y", qop=" auth , auth-int ,"')
    assert c.qop_options == ("auth", "auth-int")


@pytest.mark.parametrize("written", ["true", "TRUE", "True", '"true"'])
def test_challenge_stale_true_is_case_insensitive(written: str) -> None:
    assert parse_challenge(f'Digest realm="x", nonce="y", stale={written}').stale is True


@pytest.mark.parametrize("written", ["false", "FALSE", "no", '""'])
def test_challenge_stale_other_values_are_false(written: str) -> None:
    assert parse_challenge(f'Digest realm="x", nonce="y", stale={written}').stale is False


def test_challenge_userhash_flag() -> None:
    assert parse_challenge('Digest realm="x", nonce="y", userhash=TRUE').userhash is True


def test_unknown_challenge_scheme_parses_without_digest_requirements() -> None:
    c = parse_challenge('NoOneKnowsThisScheme opaque-data=here, other="x y"')
    assert c.scheme == "NoOneKnowsThisScheme"
    assert not c.is_digest
    assert c.params == {"opaque-data": "here", "other": "x y"}
    assert c.algorithm is None
    assert c.realm is None


# --- credentials --------------------------------------------------------------------------------

CREDENTIALS: list[tuple[str, str, dict[str, str]]] = [
    (
        # Linphone / Zoiper style REGISTER to Asterisk: no spaces, qop and nc unquoted.
        "softphone_register",
        'Digest username="1001",realm="asterisk",nonce="1700000000/6f1c0e3a",'
        'uri="sip:pbx.example.com",response="0123456789abcdef0123456789abcdef",'
        'cnonce="b7d1a0f2",nc=00000001,qop=auth,algorithm=MD5',
        {
            "username": "1001",
            "realm": "asterisk",
            "nonce": "1700000000/6f1c0e3a",
            "uri": "sip:pbx.example.com",
            "response": "0123456789abcdef0123456789abcdef",
            "cnonce": "b7d1a0f2",
            "nc": "00000001",
            "qop": "auth",
            "algorithm": "MD5",
        },
    ),
    (
        # Some clients quote qop and algorithm in credentials although RFC 3261 §25.1 says token.
        "quoted_qop_and_algorithm",
        'Digest username="bob", realm="kamailio.org", nonce="Zx9+Ab==", '
        'uri="sip:kamailio.org;transport=tcp", response="aa", qop="auth", nc=0000000a, '
        'cnonce="c", algorithm="SHA-256", opaque="op"',
        {
            "username": "bob",
            "realm": "kamailio.org",
            "nonce": "Zx9+Ab==",
            "uri": "sip:kamailio.org;transport=tcp",
            "response": "aa",
            "qop": "auth",
            "nc": "0000000a",
            "cnonce": "c",
            "algorithm": "SHA-256",
            "opaque": "op",
        },
    ),
    (
        # FreeSWITCH-registered phone, RFC 2617 compatibility (no qop).
        "freeswitch_no_qop",
        'Digest username="1000", realm="10.0.0.1", nonce="8f6e6a96-1e0a-4c8e-9c2b-3f2e8b0d5a7c", '
        'uri="sip:10.0.0.1:5060", response="1949323746fe6a43ef61f9606e7febea", algorithm=MD5',
        {
            "username": "1000",
            "realm": "10.0.0.1",
            "nonce": "8f6e6a96-1e0a-4c8e-9c2b-3f2e8b0d5a7c",
            "uri": "sip:10.0.0.1:5060",
            "response": "1949323746fe6a43ef61f9606e7febea",
            "algorithm": "MD5",
        },
    ),
    (
        "username_with_escaped_quote",
        r'Digest username="al\"ice", realm="r", nonce="n", uri="sip:r", response="x"',
        {"username": 'al"ice', "realm": "r", "nonce": "n", "uri": "sip:r", "response": "x"},
    ),
]


@pytest.mark.parametrize(
    ("value", "params"),
    [(value, params) for _name, value, params in CREDENTIALS],
    ids=[name for name, _value, _params in CREDENTIALS],
)
def test_parse_credentials_gives_unquoted_lowercase_params(
    value: str, params: dict[str, str]
) -> None:
    credentials = parse_credentials(value)
    assert credentials.params == params
    assert credentials.is_digest


def test_credentials_properties() -> None:
    c = parse_credentials(CREDENTIALS[0][1])
    assert c.username == "1001"
    assert c.realm == "asterisk"
    assert c.nonce == "1700000000/6f1c0e3a"
    assert c.uri == "sip:pbx.example.com"
    assert c.response == "0123456789abcdef0123456789abcdef"
    assert c.algorithm == "MD5"
    assert c.cnonce == "b7d1a0f2"
    assert c.opaque is None
    assert c.qop == "auth"
    assert c.nc == "00000001"
    assert c.userhash is False


def test_credentials_algorithm_defaults_to_md5_and_userhash_flag() -> None:
    c = parse_credentials(
        'Digest username="h", realm="r", nonce="n", uri="u", response="x", userhash=true'
    )
    assert c.algorithm == "MD5"
    assert c.userhash is True


def test_rfc4475_3_3_7_unknown_authorization_scheme_is_valid() -> None:
    # RFC 4475 §3.3.7: "Authorization: NoOneKnowsThisScheme opaque-data=here" is syntactically
    # valid; a receiver that does not know the scheme rejects it later, not the parser.
    c = parse_credentials("NoOneKnowsThisScheme opaque-data=here")
    assert c == Credentials("NoOneKnowsThisScheme", {"opaque-data": "here"})
    assert not c.is_digest
    assert c.algorithm is None


def test_rfc3261_20_7_abbreviated_example_is_rejected_for_lacking_uri() -> None:
    # RFC 3261 §20.7's example omits uri; RFC 2617 §3.2.2 (which RFC 3261 §22.4 builds on)
    # makes uri mandatory, and without it the response cannot be checked.
    with pytest.raises(ValueError, match="'uri'"):
        parse_credentials(
            'Digest username="Alice", realm="atlanta.com", '
            'nonce="84a4cc6f3082121f32b42a2187831a9e", '
            'response="7587245234b3434cc3412213e5f113a5432"'
        )


# --- errors -------------------------------------------------------------------------------------

CHALLENGE_ERRORS: list[tuple[str, str, str]] = [
    ("empty", "", "empty"),
    ("whitespace_only", " \t ", "empty"),
    ("scheme_only", "Digest", "no auth-params"),
    ("scheme_then_space", "Digest   ", "no auth-params"),
    ("missing_nonce", 'Digest realm="x"', "'nonce'"),
    ("missing_realm", 'Digest nonce="y", qop="auth"', "'realm'"),
    ("duplicate_param", 'Digest realm="x", nonce="y", realm="z"', "duplicate auth-param 'realm'"),
    ("duplicate_param_other_case", 'Digest realm="x", nonce="y", NONCE="z"', "duplicate"),
    ("unterminated_quote", 'Digest realm="x, nonce=y', "unterminated"),
    ("trailing_comma", 'Digest realm="x", nonce="y",', "trailing comma"),
    ("empty_list_element", 'Digest realm="x",, nonce="y"', "empty auth-param"),
    ("missing_comma", 'Digest realm="x" nonce="y"', "expected ','"),
    ("no_equal", 'Digest realm, nonce="y"', "expected '='"),
    ("no_value", 'Digest realm=, nonce="y"', "no valid value"),
    ("comma_after_scheme", 'Digest,realm="x", nonce="y"', "whitespace after scheme"),
    ("scheme_not_token", '"Digest" realm="x"', "auth-scheme"),
    ("unquoted_value_with_slash", 'Digest realm=a/b, nonce="y"', "expected ','"),
    ("control_char_in_quotes", 'Digest realm="a\x01b", nonce="y"', "invalid character"),
    ("bare_newline_in_quotes", 'Digest realm="a\nb", nonce="y"', "invalid character"),
    ("escaped_newline", 'Digest realm="a\\\nb", nonce="y"', "invalid escape"),
    ("fold_without_whitespace", 'Digest realm="x",\r\nnonce="y"', "auth-param name"),
    ("lone_surrogate", 'Digest realm="\ud800", nonce="y"', "invalid character"),
]


@pytest.mark.parametrize(
    ("value", "detail"),
    [(value, detail) for _name, value, detail in CHALLENGE_ERRORS],
    ids=[name for name, _value, _detail in CHALLENGE_ERRORS],
)
def test_parse_challenge_rejects_with_specific_detail(value: str, detail: str) -> None:
    with pytest.raises(ValueError, match=detail):
        parse_challenge(value)


@pytest.mark.parametrize("missing", ["username", "realm", "nonce", "uri", "response"])
def test_parse_credentials_names_the_missing_required_param(missing: str) -> None:
    params = {"username": "u", "realm": "r", "nonce": "n", "uri": "sip:r", "response": "x"}
    del params[missing]
    value = "Digest " + ", ".join(f'{k}="{v}"' for k, v in params.items())
    with pytest.raises(ValueError, match=f"lack required '{missing}'"):
        parse_credentials(value)


def test_parse_credentials_rejects_duplicate_and_empty() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        parse_credentials(
            'Digest username="u", realm="r", nonce="n", uri="u", response="x", nc=1, nc=2'
        )
    with pytest.raises(ValueError, match="empty"):
        parse_credentials("")


def test_unknown_scheme_still_needs_valid_params() -> None:
    with pytest.raises(ValueError):
        parse_credentials("NoOneKnowsThisScheme opaque-data")
    with pytest.raises(ValueError):
        parse_challenge("Basic")


def test_unterminated_quote_is_rejected_quickly() -> None:
    # A hostile value must not trigger regex backtracking blow-up.
    value = 'Digest realm="' + 'a\\"' * 20000
    with pytest.raises(ValueError, match="unterminated"):
        parse_challenge(value)


# --- properties ---------------------------------------------------------------------------------

_AUTH_ALPHABET = 'Digest realmnonceuriqp="\\ ,=\t\r\n\x00\x7féø☎\ud800-/'
_FRAGMENTS = [
    "Digest",
    "NoOneKnowsThisScheme",
    " ",
    "\t",
    "\r\n ",
    "\n",
    ",",
    "=",
    '"',
    "\\",
    '\\"',
    "realm",
    "nonce",
    "username",
    "uri",
    "response",
    "qop",
    '"auth,auth-int"',
    "stale=TRUE",
    "x",
    "é",
    "\x00",
]

_any_text = st.one_of(
    st.text(),
    st.text(alphabet=_AUTH_ALPHABET, max_size=80),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=30).map("".join),
)


def _touch(value: Challenge | Credentials) -> None:
    # Every property must work on whatever the parser accepted.
    for name in dir(value):
        if not name.startswith("_"):
            getattr(value, name)


@settings(max_examples=300, deadline=None)
@given(_any_text)
def test_parse_challenge_returns_or_raises_value_error_only(text: str) -> None:
    try:
        result = parse_challenge(text)
    except ValueError:
        return
    assert isinstance(result, Challenge)
    _touch(result)


@settings(max_examples=300, deadline=None)
@given(_any_text)
def test_parse_credentials_returns_or_raises_value_error_only(text: str) -> None:
    try:
        result = parse_credentials(text)
    except ValueError:
        return
    assert isinstance(result, Credentials)
    _touch(result)


_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
# Any text a quoted-string can carry: printable ASCII (quotes and backslashes included), tab,
# and non-ASCII characters other than surrogates.
_quotable = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.just("\t"),
    max_size=20,
)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(_token, st.one_of(_token, _quotable), min_size=1, max_size=8).filter(
        lambda d: len({k.lower() for k in d}) == len(d)
    ),
    st.sampled_from([",", ", ", " , ", ",\t"]),
)
def test_serialized_params_parse_back_unchanged(params: dict[str, str], sep: str) -> None:
    value = "X-Scheme " + sep.join(f"{k}={_quote(v)}" for k, v in params.items())
    parsed = parse_challenge(value)
    assert parsed.scheme == "X-Scheme"
    assert parsed.params == {k.lower(): v for k, v in params.items()}
