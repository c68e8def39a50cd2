"""credential: digest brute force, password spraying, distributed guessing (conventions.md §1).

Theory of operation
-------------------
All three detectors count the same event, an *authentication failure*: a 401, 407 or 403
response whose CSeq method is REGISTER or INVITE. The attacker is the response's destination
(the client the server answers); the account is the digest username of the request it answers
when that request was seen, else the To user (REGISTER) or From user (INVITE) of the response.

A 401/407 to a request *without* credentials is the normal first step of digest authentication
(RFC 3261 §22.2), so by default a challenge counts only when the request it answers - same
client IP, Call-ID and CSeq number - was seen carrying Authorization or Proxy-Authorization.
A 403 always counts. Each detector remembers those requests in its own bounded
:class:`TtlMap`, which also marks the transaction once counted so that a retransmitted response
is not counted twice.

Emission: a detector emits one hit when a key's window reaches the threshold, then, while the
key keeps failing, at most one hit per window carrying the failures seen since the previous hit;
the episode's remainder is emitted when the key has been quiet for a window (``advance``). The
engine adds the hits' ``count``s, so a finding's count is (close to) the failures in its
episode: the first hit carries the window's count at the crossing (for the distributed detector,
its distinct sources), later hits the failures since. Failures that fall below the threshold
while an episode is open join its count without extending it, so a re-crossing right after an
episode closed may count a few of them twice.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from pydantic import Field

from sipwarden.detect.base import Detector, DetectorConfig
from sipwarden.detect.finding import Evidence, Finding, RecommendedAction, Target
from sipwarden.detect.observation import Observation
from sipwarden.detect.registry import register
from sipwarden.detect.tables import (
    BoundedTable,
    DistinctCounter,
    SlidingWindowCounter,
    TableStats,
    TtlMap,
)
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.net import Endpoint
from sipwarden.sip import Request, Response, SipParseError

__all__ = [
    "DistributedBruteForce",
    "DistributedBruteForceConfig",
    "PasswordSpray",
    "PasswordSprayConfig",
    "RegistrationBruteForce",
    "RegistrationBruteForceConfig",
]

K = TypeVar("K", bound=Hashable)

_FAILURE_STATUSES = frozenset({401, 403, 407})
_CHALLENGE_STATUSES = frozenset({401, 407})
_AUTH_METHODS = frozenset({"REGISTER", "INVITE"})
#: Attacker-chosen strings kept in tables are cut to this length (users, Call-IDs).
_MAX_TEXT_CHARS = 128
#: Evidence samples a pending (not yet reported) episode keeps per key.
_MAX_PENDING_SAMPLES = 3


class _CredentialConfig(DetectorConfig):
    """What the three credential detectors share: how a failure is recognised."""

    challenges_need_credentials: bool = Field(
        True,
        description=(
            "Count a 401/407 only when the request it answers (same client IP, Call-ID and "
            "CSeq number) was seen carrying Authorization/Proxy-Authorization; the first "
            "challenge of every login is normal (RFC 3261 §22.2). A 403 always counts. False "
            "counts every 401/407/403, as Elastic's SIP brute-force rule and fail2ban's "
            "FreeSWITCH 'extra' mode do (busy legitimate phones can then trip it); use false "
            "when the capture only sees the server's side."
        ),
    )
    credential_memory_s: float = Field(
        32.0,
        gt=0,
        description=(
            "How long a request carrying credentials is remembered while its answer is "
            "awaited, in seconds. Default 64×T1 = 32 s, the RFC 3261 §17.1.2.2 Timer F "
            "transaction timeout."
        ),
    )
    max_pending_requests: int = Field(
        100_000,
        ge=1,
        description=(
            "Most requests with credentials remembered at once; the least recently seen is "
            "evicted first and counted (its failure then counts only if it is a 403)."
        ),
    )


@dataclass(frozen=True, slots=True)
class _Failure:
    ts: float
    frame: int
    #: The client the server answered (the response's destination): the attacker.
    client: Endpoint
    server: Endpoint
    user: str
    status: int
    method: str
    call_id: str


class _FailureTracker:
    """Turns observations into :class:`_Failure`s; remembers requests that carried credentials.

    The map value is ``(digest username, already counted)``, keyed by (client IP, Call-ID, CSeq
    number).
    """

    def __init__(self, config: _CredentialConfig) -> None:
        self._need_credentials = config.challenges_need_credentials
        self.requests: TtlMap[tuple[str, str, int], tuple[str, bool]] = TtlMap(
            config.max_pending_requests, config.credential_memory_s
        )

    def failure(self, obs: Observation) -> _Failure | None:
        message = obs.message
        if isinstance(message, Request):
            self._remember(obs, message)
            return None
        if not isinstance(message, Response) or message.status not in _FAILURE_STATUSES:
            return None
        try:
            cseq = message.cseq
            call_id = (message.call_id or "")[:_MAX_TEXT_CHARS]
        except SipParseError:
            return None
        if cseq is None or cseq.method.upper() not in _AUTH_METHODS:
            return None
        method = cseq.method.upper()
        key = (obs.dst.ip, call_id, cseq.number)
        remembered = self.requests.get(key, obs.ts)
        if remembered is not None:
            username, counted = remembered
            if counted:
                return None  # a retransmitted final response
        else:
            username = ""
            if message.status in _CHALLENGE_STATUSES and self._need_credentials:
                return None  # a challenge to a request without credentials: normal
        user = username or _header_user(message, method)
        if user is None:
            return None
        self.requests.set(key, (username, True), obs.ts)
        return _Failure(obs.ts, obs.frame, obs.dst, obs.src, user, message.status, method, call_id)

    def _remember(self, obs: Observation, request: Request) -> None:
        if request.method not in _AUTH_METHODS:
            return
        try:
            credentials = request.authorization
            cseq = request.cseq
            call_id = (request.call_id or "")[:_MAX_TEXT_CHARS]
        except SipParseError:
            return
        if not credentials or cseq is None:
            return
        key = (obs.src.ip, call_id, cseq.number)
        if self.requests.get(key, obs.ts) is None:  # a retransmission keeps its state
            username = (credentials[0].username or "")[:_MAX_TEXT_CHARS]
            self.requests.set(key, (username, False), obs.ts)


def _header_user(message: Response, method: str) -> str | None:
    """The account a failure is about when no credentials were seen: To user for REGISTER
    (the AOR), From user for INVITE (the To user there is the callee)."""
    try:
        address = message.to if method == "REGISTER" else message.from_
        user = address.uri.user if address is not None else None
    except (SipParseError, ValueError):
        return None
    return user[:_MAX_TEXT_CHARS] if user else None


class _Pending:
    """An open episode of one key: when it last hit, and the failures not yet reported."""

    __slots__ = ("count", "evidence", "first", "last", "last_hit", "latest")

    def __init__(self, failure: _Failure) -> None:
        self.last_hit = failure.ts
        self.latest = failure
        self.count = 0
        self.first = failure.ts
        self.last = failure.ts
        self.evidence = Evidence()

    def add(self, failure: _Failure) -> None:
        if not self.count:
            self.first = failure.ts
        self.count += 1
        self.last = failure.ts
        self.latest = failure
        if len(self.evidence.frames) < _MAX_PENDING_SAMPLES:
            self.evidence = self.evidence.add(failure.frame or None, failure.call_id or None)


@dataclass(frozen=True, slots=True)
class _Hit:
    count: int
    first: float
    last: float
    latest: _Failure
    evidence: Evidence


def _sample(failure: _Failure) -> Evidence:
    return Evidence().add(failure.frame or None, failure.call_id or None)


class _Episodes(Generic[K]):
    """Rate-limits hits per key: first hit at the crossing, then at most one per window.

    An entry lives for one window after the key's last failure over the threshold; when it
    expires its unreported failures are emitted (``expire``).
    """

    def __init__(self, max_entries: int, window_s: float) -> None:
        self.window_s = window_s
        self.table: TtlMap[K, _Pending] = TtlMap(max_entries, window_s)

    def over(self, key: K, failure: _Failure, window_count: int) -> _Hit | None:
        """A failure with the key's window at or over the threshold."""
        now = failure.ts
        state = self.table.get(key, now)
        if state is None:
            self.table.set(key, _Pending(failure), now)
            return _Hit(window_count, now, now, failure, _sample(failure))
        state.add(failure)
        self.table.touch(key, now)
        if now - state.last_hit < self.window_s:
            return None
        state.last_hit = now
        return self._drain(state)

    def under(self, key: K, failure: _Failure) -> None:
        """A failure below the threshold: part of a live episode's count, without extending it."""
        state = self.table.get(key, failure.ts)
        if state is not None:
            state.add(failure)

    def expire(self, now: float) -> list[_Hit]:
        return [self._drain(state) for _, state in self.table.expire(now) if state.count]

    @staticmethod
    def _drain(state: _Pending) -> _Hit:
        hit = _Hit(state.count, state.first, state.last, state.latest, state.evidence)
        state.count = 0
        state.evidence = Evidence()
        return hit


class _CredentialDetector(Detector):
    """The plumbing the three share: failures in, hits out, tables summed."""

    threat: ClassVar[Threat] = Threat.CREDENTIAL

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, _CredentialConfig)
        self._failures = _FailureTracker(self.config)

    #: Episodes over the threshold, by key; each subclass sizes it from its own config.
    _open: _Episodes[str]

    def _tables(self) -> list[BoundedTable]:
        return [self._failures.requests]

    @abstractmethod
    def _key(self, failure: _Failure) -> str:
        """What one finding is about (an attacker, a user, or both)."""

    @abstractmethod
    def _measure(self, key: str, failure: _Failure) -> tuple[int, bool]:
        """Record the failure; (the count a hit reports, whether the key is over threshold)."""

    @abstractmethod
    def _finding(self, hit: _Hit) -> Finding: ...

    def _count(self, failure: _Failure) -> list[Finding]:
        key = self._key(failure)
        count, over = self._measure(key, failure)
        if not over:
            self._open.under(key, failure)
            return []
        hit = self._open.over(key, failure, count)
        return [self._finding(hit)] if hit is not None else []

    def observe(self, obs: Observation) -> list[Finding]:
        hits = self.advance(obs.ts) if self._due(obs.ts) else []
        failure = self._failures.failure(obs)
        if failure is None or self.allowed(failure.client.ip):
            return hits
        return hits + self._count(failure)

    def _due(self, now: float) -> bool:
        deadline = self.next_deadline()
        return deadline is not None and deadline <= now

    def advance(self, now: float) -> list[Finding]:
        self._failures.requests.expire(now)
        for table in self._tables():
            if isinstance(table, SlidingWindowCounter | DistinctCounter):
                table.expire(now)
        return [self._finding(hit) for hit in self._open.expire(now)]

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for d in (
                self._failures.requests.next_expiry(),
                self._open.table.next_expiry(),
                *(
                    t.next_expiry()
                    for t in self._tables()
                    if isinstance(t, SlidingWindowCounter | DistinctCounter)
                ),
            )
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    def stats(self) -> TableStats:
        return TableStats.total([*self._tables(), self._open.table])

    def state_size(self) -> int:
        return self.stats().entries

    def evictions(self) -> int:
        return self.stats().evictions


def _indicators(failure: _Failure, **extra: int) -> dict[str, str]:
    data = {
        "user": failure.user,
        "last_status": str(failure.status),
        "method": failure.method,
    }
    data.update({k: str(v) for k, v in extra.items()})
    return data


# -- 1. per (source, user) ------------------------------------------------------------------------
class RegistrationBruteForceConfig(_CredentialConfig):
    window_s: float = Field(
        300.0,
        gt=0,
        description=(
            "Sliding window, seconds. Default as Elastic's SIP REGISTER brute-force rule "
            "(5-min buckets; elastic/detection-rules). fail2ban's findtime is 10 min. Unlike "
            "Elastic's fixed buckets, the window slides: it fires as soon as the count is "
            "reached, also across a bucket boundary."
        ),
    )
    failures_per_window: int = Field(
        10,
        ge=1,
        description=(
            "Failures for one (source IP, user) within one window that make a brute force. "
            "Default as Elastic (≥10 per extension / 5 min) and fail2ban's [asterisk] jail "
            "maxretry = 10."
        ),
    )
    max_pairs: int = Field(
        100_000,
        ge=1,
        description=(
            "Most (source IP, user) pairs tracked at once; the least recently failing pair is "
            "evicted first and counted."
        ),
    )


@register
class RegistrationBruteForce(_CredentialDetector):
    """Many failed digest authentications for one user from one source within a window.

    Signal: 401/407 answers to REGISTER/INVITE that carried credentials, and 403s, counted per
    (client IP, user). Why: digest guessing (svcrack-style) shows as a dense run of failures
    against one account. Defaults' anchor: Elastic SIP brute-force rule (10 per extension in
    5 min), fail2ban [asterisk] maxretry 10. Known false positives: a phone with a stale
    password retrying (often slower than the threshold); many phones behind one NAT using one
    account; the allow-list covers PBXs and SBCs.
    """

    id: ClassVar[str] = "credential.registration_brute_force"
    Config: ClassVar[type[DetectorConfig]] = RegistrationBruteForceConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, RegistrationBruteForceConfig)
        cfg = self.config
        self._threshold = cfg.failures_per_window
        self._counter: SlidingWindowCounter[tuple[str, str]] = SlidingWindowCounter(
            cfg.max_pairs, cfg.window_s, cfg.failures_per_window
        )
        self._open: _Episodes[str] = _Episodes(cfg.max_pairs, cfg.window_s)

    def _tables(self) -> list[BoundedTable]:
        return [*super()._tables(), self._counter]

    def _key(self, failure: _Failure) -> str:
        return f"{failure.client.ip}|{failure.user}"

    def _measure(self, key: str, failure: _Failure) -> tuple[int, bool]:
        count = self._counter.add((failure.client.ip, failure.user), failure.ts)
        return count, count >= self._threshold

    def _finding(self, hit: _Hit) -> Finding:
        failure = hit.latest
        return Finding(
            self.id,
            self.threat,
            Severity.HIGH,
            80,
            f"Digest brute force on user {failure.user!r} from {failure.client.ip} "
            f"({failure.method} {failure.status} to {failure.server.ip})",
            f"{failure.client.ip}|{failure.user}",
            hit.first,
            hit.last,
            count=hit.count,
            source=failure.client,
            target=Target(failure.server.ip, failure.server.port, failure.user),
            indicators=_indicators(failure),
            evidence=hit.evidence,
            recommended_action=RecommendedAction("TEMP_BLOCK", 600),
        )


# -- 2. one source, many users --------------------------------------------------------------------
class PasswordSprayConfig(_CredentialConfig):
    window_s: float = Field(
        300.0,
        gt=0,
        description=(
            "Sliding window, seconds. Default as Elastic's SIP REGISTER brute-force rule "
            "(5-min buckets), sliding rather than bucketed."
        ),
    )
    failures_per_window: int = Field(
        25,
        ge=1,
        description=(
            "Failures from one source IP within one window (over all users). Default as "
            "Elastic's spray condition (≥25 total)."
        ),
    )
    users_per_window: int = Field(
        5,
        ge=1,
        description=(
            "Distinct users those failures must cover. Default as Elastic (≥5 extensions); "
            "Elastic also wants ≥2 failures per extension, which this detector does not check."
        ),
    )
    max_sources: int = Field(
        100_000,
        ge=1,
        description=(
            "Most source IPs tracked at once; the least recently failing is evicted first "
            "and counted."
        ),
    )


@register
class PasswordSpray(_CredentialDetector):
    """One source failing authentication across many users within a window.

    Signal: authentication failures (as for the brute-force detector) per client IP, with the
    distinct users they name. Why: password spraying tries a few common passwords on many
    accounts, staying under per-account thresholds. Defaults' anchor: Elastic SIP rule's spray
    branch (≥25 failures over ≥5 extensions in 5 min). Known false positives: a NAT gateway or
    SBC fronting many phones after a password change or provisioning error; allow-list those.
    """

    id: ClassVar[str] = "credential.password_spray"
    Config: ClassVar[type[DetectorConfig]] = PasswordSprayConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, PasswordSprayConfig)
        cfg = self.config
        self._failures_needed = cfg.failures_per_window
        self._users_needed = cfg.users_per_window
        self._counter: SlidingWindowCounter[str] = SlidingWindowCounter(
            cfg.max_sources, cfg.window_s, cfg.failures_per_window
        )
        self._users: DistinctCounter[str, str] = DistinctCounter(
            cfg.max_sources, cfg.window_s, cfg.users_per_window
        )
        self._open: _Episodes[str] = _Episodes(cfg.max_sources, cfg.window_s)

    def _tables(self) -> list[BoundedTable]:
        return [*super()._tables(), self._counter, self._users]

    def _key(self, failure: _Failure) -> str:
        return failure.client.ip

    def _measure(self, key: str, failure: _Failure) -> tuple[int, bool]:
        failures = self._counter.add(key, failure.ts)
        users = self._users.add(key, failure.user, failure.ts)
        return failures, failures >= self._failures_needed and users >= self._users_needed

    def _finding(self, hit: _Hit) -> Finding:
        failure = hit.latest
        return Finding(
            self.id,
            self.threat,
            Severity.HIGH,
            85,
            f"Password spray from {failure.client.ip}: failures across ≥{self._users_needed} "
            f"users ({failure.method} to {failure.server.ip})",
            failure.client.ip,
            hit.first,
            hit.last,
            count=hit.count,
            source=failure.client,
            target=Target(failure.server.ip, failure.server.port),
            indicators=_indicators(failure),
            evidence=hit.evidence,
            recommended_action=RecommendedAction("TEMP_BLOCK", 600),
        )


# -- 3. one user, many sources --------------------------------------------------------------------
class DistributedBruteForceConfig(_CredentialConfig):
    window_s: float = Field(
        600.0,
        gt=0,
        description=(
            "Sliding window, seconds. Default 10 min as fail2ban's findtime: a distributed "
            "attack is slower per source than a single-source one. No public tool publishes a "
            "default for this signal (ABC Monitor's authfail_uri has none documented)."
        ),
    )
    sources_per_window: int = Field(
        10,
        ge=1,
        description=(
            "Distinct source IPs failing authentication for one user within one window. "
            "Default 10, by analogy with Elastic's 10 failures per extension and fail2ban's "
            "maxretry 10: ten different addresses failing one account is no roaming phone."
        ),
    )
    max_users: int = Field(
        100_000,
        ge=1,
        description=(
            "Most users tracked at once; the least recently failing is evicted first and counted."
        ),
    )


@register
class DistributedBruteForce(_CredentialDetector):
    """One user failing authentication from many sources within a window.

    Signal: authentication failures (as for the brute-force detector) per user, with the
    distinct client IPs they come from. Why: a botnet spreads guesses for one account over many
    addresses so that no per-source threshold trips (anchors §4: only FRAFOS ABC's
    ``authfail_uri`` covers it). Defaults' anchor: none published; 10 sources / 10 min by
    analogy with Elastic (10 per extension) and fail2ban (findtime 10 min). Known false
    positives: a mobile softphone with a stale password moving between networks (a few
    sources, not ten); carrier-grade NAT pools rotating a client's address.
    """

    id: ClassVar[str] = "credential.distributed_brute_force"
    Config: ClassVar[type[DetectorConfig]] = DistributedBruteForceConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, DistributedBruteForceConfig)
        cfg = self.config
        self._threshold = cfg.sources_per_window
        self._sources: DistinctCounter[str, str] = DistinctCounter(
            cfg.max_users, cfg.window_s, cfg.sources_per_window
        )
        self._open: _Episodes[str] = _Episodes(cfg.max_users, cfg.window_s)

    def _tables(self) -> list[BoundedTable]:
        return [*super()._tables(), self._sources]

    def _key(self, failure: _Failure) -> str:
        return failure.user

    def _measure(self, key: str, failure: _Failure) -> tuple[int, bool]:
        sources = self._sources.add(key, failure.client.ip, failure.ts)
        return sources, sources >= self._threshold

    def _finding(self, hit: _Hit) -> Finding:
        failure = hit.latest
        return Finding(
            self.id,
            self.threat,
            Severity.HIGH,
            70,
            f"Distributed brute force on user {failure.user!r}: failures from "
            f"≥{self._threshold} sources ({failure.method} to {failure.server.ip})",
            failure.user,
            hit.first,
            hit.last,
            count=hit.count,
            target=Target(failure.server.ip, failure.server.port, failure.user),
            indicators=_indicators(failure),
            evidence=hit.evidence,
            recommended_action=RecommendedAction("MONITOR"),
        )
