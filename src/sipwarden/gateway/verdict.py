"""What the policy decides for one message, and why a message is dropped (a closed set, used as
the ``reason`` label of ``sipwarden_gateway_dropped_total``)."""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

__all__ = ["Drop", "DropReason", "Forward", "Reject", "Tarpit", "Verdict"]


class DropReason(StrEnum):
    """Why a message was not forwarded. Every refusal counts under exactly one of these."""

    BLOCKLISTED = "blocklisted"  # source on the blocklist (a finding, the CLI or the exchange)
    RATE_LIMITED_SOURCE = "rate_limited_source"  # per-source token bucket empty
    RATE_LIMITED_TARGET = "rate_limited_target"  # per-target (Request-URI user) bucket empty
    METHOD_NOT_ALLOWED = "method_not_allowed"  # least functionality: 405
    TOO_LARGE = "too_large"  # over the size limits: 413
    MALFORMED = "malformed"  # does not parse, or breaks a rule the gateway enforces: 400
    INJECTION = "injection"  # payload in a user-controlled field
    SCANNER = "scanner"  # known scanner (User-Agent or fingerprint)
    TOO_MANY_HOPS = "too_many_hops"  # Max-Forwards reached 0: 483
    LOOP = "loop"  # the request already passed through this gateway (RFC 3261 §16.3)
    NO_ROUTE = "no_route"  # a response whose top Via is not ours, or no upstream
    TOPOLOGY_TOKEN = "topology_token"  # a hidden address whose token does not authenticate
    ENGINE_ERROR = "engine_error"  # the engine or the policy raised and the gateway fails closed
    OVERLOAD = "overload"  # the gateway itself is saturated: 503 + Retry-After


class Forward(NamedTuple):
    """Forward the message (possibly edited by the caller: Via, Max-Forwards, sanitising)."""


class Reject(NamedTuple):
    """Answer the request with ``status`` (and ``Retry-After`` seconds for 503), do not forward."""

    status: int
    reason: DropReason
    retry_after: int | None = None


class Drop(NamedTuple):
    """Discard silently: nothing is sent back (an attacker learns nothing, spends its timeouts)."""

    reason: DropReason


class Tarpit(NamedTuple):
    """Hold the request ``delay_s`` seconds, then drop it: slows scanners that wait for answers."""

    reason: DropReason
    delay_s: float


Verdict = Forward | Reject | Drop | Tarpit
