"""RFC 3261 §25 grammar fragments as regex source strings, each under the ABNF it implements.

Internal to :mod:`sipwarden.sip`: compiled where they are used, so each module pays only for the
patterns it needs.
"""

from __future__ import annotations

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~")

# word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#        "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"

# callid = word [ "@" word ]
CALL_ID = rf"{WORD}(?:@{WORD})?"

# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
#   qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
#   quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
QUOTED_STRING = r'"(?:[^"\\\r\n]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'

# hostname = *( domainlabel "." ) toplabel [ "." ]   (labels: alphanum / "-", not at the ends;
# RFC 3261 errata and real deployments accept "_" too, e.g. SRV-style names)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-_]*[A-Za-z0-9])?"
HOSTNAME = rf"(?:{_LABEL}\.)*{_LABEL}\.?"
IPV4 = r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"
# IPv6reference = "[" IPv6address "]"; the address is checked with ipaddress (RFC 5118 §4.10).
IPV6_REFERENCE = r"\[[0-9A-Fa-f:.]+\]"
HOST = rf"(?:{IPV6_REFERENCE}|{HOSTNAME})"

# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"; unreserved = alphanum / mark
# mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"; escaped = "%" HEXDIG HEXDIG
USER = r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+"
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
PASSWORD = r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*"
# paramchar = param-unreserved / unreserved / escaped; param-unreserved = "[" / "]" / "/" / ":" /
# "&" / "+" / "$"
PARAMCHARS = r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+"
# hname/hvalue = 1*( hnv-unreserved / unreserved / escaped ); hnv-unreserved = "[" / "]" / "/" /
# "?" / ":" / "+" / "$"
HCHARS = r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})"

# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*"

#: Methods of RFC 3261 and its extensions (RFC 3262 PRACK, 3265/6665 SUBSCRIBE/NOTIFY, 3311
#: UPDATE, 3428 MESSAGE, 3515 REFER, 3903 PUBLISH, 2976 INFO). Others are legal extension
#: methods and recorded as ``unknown_method``.
KNOWN_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    }
)
