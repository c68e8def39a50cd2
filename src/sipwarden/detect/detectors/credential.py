"""credential: digest brute force, password spraying, distributed guessing (conventions.md §1).

Theory of operation
-------------------
All three detectors count the same event, an *authentication failure*: a final 401, 407 or 403
to a REGISTER or INVITE, as the engine's tracker matched it to its request (a
:class:`~sipwarden.detect.tracker.Transaction`: one per Via branch, its final answer reported
once, so a retransmitted 401 is not a new guess). The attacker is the request's source; the
account is the digest username the request carried, else its To user (REGISTER) or From user
(INVITE).

A 401/407 to a request *without* credentials is the normal first step of digest authentication
(RFC 3261 §22.2), so by default a challenge counts only when the request carried Authorization
or Proxy-Authorization. A 403 counts for a REGISTER always, for an INVITE only with
credentials (without, it refuses a call by policy: no password was guessed). A response whose
request was not seen (a capture of one direction only) is not counted.

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
from sipwarden.detect.tracker import Transaction
from sipwarden.net import Endpoint
from sipwarden.sip import Credentials, Request, Response, SipParseError

__all__ = [
    "DistributedBruteForce",
    "DistributedBruteForceConfig",
    "NonceReuse",
    "NonceReuseConfig",
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
            "Count a 401/407 only when the request it answers carried Authorization/"
            "Proxy-Authorization; the first challenge of every login is normal (RFC 3261 "
            "§22.2). A 403 counts for a REGISTER always, for an INVITE only with credentials "
            "(without, it refuses the call by policy). False counts every 401/407/403, as "
            "Elastic's SIP brute-force rule and fail2ban's FreeSWITCH 'extra' mode do (busy "
            "legitimate phones can then trip it)."
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


def _failure(tx: Transaction, need_credentials: bool) -> _Failure | None:
    """The authentication failure a final answer records, if it is one.

    The tracker reports each transaction's final answer once (a retransmitted 401 is not a new
    guess), and a transaction is a request with its own Via branch: a tool that re-sends one
    Call-ID and CSeq with a new branch and a new digest response (SIPVicious svcrack) makes a
    new guess each time.
    """
    status = tx.status
    if status not in _FAILURE_STATUSES or tx.method not in _AUTH_METHODS:
        return None
    if need_credentials and tx.credentials_user is None:
        if status in _CHALLENGE_STATUSES:
            return None  # a challenge to a request without credentials: normal
        if tx.method == "INVITE":
            # A 403 to a call without credentials is a policy refusal (barred destination, an
            # unknown trunk), not a wrong password: no guess was made.
            return None
    # The account: the digest username when credentials were sent, else the To user for
    # REGISTER (the AOR) and the From user for INVITE (the To user there is the callee).
    user = tx.credentials_user or (tx.to_user if tx.method == "REGISTER" else tx.from_user)
    if not user:
        return None
    return _Failure(
        tx.response_ts,
        tx.response_frame,
        tx.client,
        tx.server,
        user,
        status,
        tx.method,
        tx.call_id[:_MAX_TEXT_CHARS],
    )


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
        self._need_credentials = self.config.challenges_need_credentials

    #: Episodes over the threshold, by key; each subclass sizes it from its own config.
    _open: _Episodes[str]

    @abstractmethod
    def _tables(self) -> list[BoundedTable]:
        """The detector's counting tables (for expiry, deadlines and stats)."""

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
        return []  # failures come from the tracker's matched transactions

    def on_transaction(self, tx: Transaction) -> list[Finding]:
        failure = _failure(tx, self._need_credentials)
        if failure is None or self.allowed(failure.client.ip):
            return []
        return self._count(failure)

    def advance(self, now: float) -> list[Finding]:
        for table in self._tables():
            if isinstance(table, SlidingWindowCounter | DistinctCounter):
                table.expire(now)
        return [self._finding(hit) for hit in self._open.expire(now)]

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for d in (
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
        return [self._counter]

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
        return [self._counter, self._users]

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
        return [self._sources]

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


# -- 4. nonce reuse ------------------------------------------------------------------------------
#: Per nonce, the most recently used digest input sets and (username, server) pairs followed
#: (a nonce is normally used by one client for one account; its input sets change with each nc,
#: so the oldest is dropped for a new one rather than the new one ignored).
_MAX_PER_NONCE = 8
#: Per input set or pair, the most recent distinct values remembered (so a retransmission of a
#: recent guess is not counted again). A value is counted when it is not among these, so the
#: count is exact unless an older value comes back after this many others (a guesser or a
#: replayer repeating itself - it then over-counts the attack, never a legal client, which has
#: one response per input set).
_MAX_RECENT = 4


class NonceReuseConfig(DetectorConfig):
    guesses_per_nonce: int = Field(
        3,
        ge=2,
        description=(
            "Distinct digest responses for identical inputs (username, realm, uri, method, "
            "nc, cnonce, qop, algorithm, and the body under qop=auth-int) under one nonce "
            "that make password guessing. The response is a "
            "function of the password once the inputs are fixed, so two values mean two "
            "passwords; 3 as the Kamailio htable doc example (3 failed auths → 403 for "
            "900 s) and to let a user correct one typo."
        ),
    )
    sources_per_nonce: int = Field(
        2,
        ge=2,
        description=(
            "Distinct source IPs presenting one (nonce, username) to one server that make a "
            "replay. A "
            "nonce answers one client's request (RFC 7616 §3.3 lets servers bind it to the "
            "client address); no published anchor - 2 is the first sign. Different usernames "
            "sharing a nonce are not counted: stateless servers (Kamailio's time-based "
            "nonces) hand the same nonce to clients challenged in the same second."
        ),
    )
    nonce_expire_s: float = Field(
        300.0,
        gt=0,
        description=(
            "Age (since the nonce was first seen, in a challenge or in credentials) after "
            "which an accepted (2xx) use shows the server honours stale nonces. Kamailio "
            "auth `nonce_expire` = 300 s (OpenSIPS uses 30 s)."
        ),
    )
    nonce_memory_s: float = Field(
        3600.0,
        gt=0,
        description=(
            "How long a nonce is followed after it was first seen, seconds (not refreshed "
            "by use, so an entry never outlives this). 1 h, 12x Kamailio's nonce_expire: a "
            "nonce older than that is stale for every server we know of."
        ),
    )
    max_nonces: int = Field(
        100_000,
        ge=1,
        description=(
            "Most nonces followed at once; the oldest is evicted first and counted. Each "
            f"keeps its {_MAX_PER_NONCE} most recent input sets and (username, server) pairs, "
            f"each with its {_MAX_RECENT} most recent values, as 64-bit hashes (about 2 KB "
            "per nonce at worst)."
        ),
    )
    max_pending: int = Field(
        100_000,
        ge=1,
        description=(
            "Most stale-nonce requests remembered while their answer is awaited (32 s, RFC "
            "3261 Timer F); the least recently seen is evicted first and counted."
        ),
    )
    block_ttl_s: int = Field(
        600,
        ge=1,
        description=(
            "Suggested TEMP_BLOCK duration for guessing and replay, seconds; 600 s as the "
            "other credential detectors (fail2ban bantime 10 min)."
        ),
    )


class _RecentDistinct:
    """Values seen for one key (responses for one digest input set, sources for one user and
    server): how many new ones came, and the hashes of the most recent ones (at most
    ``_MAX_RECENT``, so a retransmission of a recent one is not counted again)."""

    __slots__ = ("distinct", "recent")

    def __init__(self) -> None:
        self.distinct = 0
        self.recent: dict[int, None] = {}

    def add(self, value: int) -> bool:
        """Record ``value``; True if it is new (not among the recent ones)."""
        if value in self.recent:
            return False
        if len(self.recent) >= _MAX_RECENT:
            del self.recent[next(iter(self.recent))]
        self.recent[value] = None
        self.distinct += 1
        return True


class _NonceState:
    """What one nonce has been used for: when it was first seen, the responses per digest
    input set, and the sources per (username, server)."""

    __slots__ = ("first_seen", "responses", "sources")

    def __init__(self, now: float) -> None:
        self.first_seen = now
        # hash of the digest inputs but the password (_digest_inputs) -> responses seen
        self.responses: dict[int, _RecentDistinct] = {}
        # hash of (username, server IP) -> source IPs
        self.sources: dict[int, _RecentDistinct] = {}

    @staticmethod
    def slot(table: dict[int, _RecentDistinct], key: int) -> _RecentDistinct:
        """The values of ``key``, made the most recent; the oldest key goes when full."""
        values = table.pop(key, None)
        if values is None:
            values = _RecentDistinct()
            if len(table) >= _MAX_PER_NONCE:
                del table[next(iter(table))]
        table[key] = values
        return values


_STALE_TIMER_F_S = 32.0


def _digest_inputs(request: Request, cred: Credentials, username: str) -> int:
    """A hash of every input of the digest ``response`` but the password (RFC 7616 §3.4.1,
    RFC 2617 §3.2.2): with these fixed, a different response means a different password.

    Kept as a hash: equality is all we need, and an int is far smaller than up to eight
    attacker-chosen strings (a 64-bit collision only ever hides one guess). With qop=auth-int
    the body is an input too (H(entity-body) in A2): a client that keeps nc and cnonce and
    sends another SDP computes another response with the same password.
    """
    body = request.body if (cred.qop or "").lower() == "auth-int" else b""
    return hash(
        (
            username,
            cred.realm,
            cred.uri,
            request.method,
            cred.nc,
            cred.cnonce,
            cred.qop,
            (cred.algorithm or "").upper(),
            body,
        )
    )


@register
class NonceReuse(Detector):
    """Nonce reuse: one digest nonce answered with several passwords, replayed from another
    address, or accepted long after it should have expired.

    Signal: per server nonce (from challenges and from Authorization/Proxy-Authorization of any
    request), (a) *guessing*: ``guesses_per_nonce`` distinct ``response`` values for the same
    (username, realm, uri, method, nc, cnonce, qop, algorithm; the body under qop=auth-int) -
    with every other input fixed the response only changes with the password; (b) *replay*:
    one (nonce, username) presented to one server from ``sources_per_nonce`` source IPs (a
    proxy forwarding credentials to its next hop sends them to another server, so it does not
    count); (c) *stale*: a request whose nonce was first seen more than ``nonce_expire_s``
    before was answered 2xx. Legal reuse - the same
    client sending the nonce again with a higher nc (RFC 7616 §3.3 / RFC 2617 §3.2.2), a
    retransmission (same response), a new request with another method or uri - never counts
    towards (a) or (b).
    Why: "distinct attempts per nonce" (conventions §1): guessing without fetching a fresh
    challenge, or credentials sniffed and replayed elsewhere, are attacks on digest itself;
    a server honouring old nonces widens the replay window (Kamailio ``nonce_expire``).
    Severity: guessing HIGH (80), replay HIGH (70) - both TEMP_BLOCK; stale acceptance LOW
    (a server hardening issue, MONITOR).
    Defaults' anchor: 3 guesses as the Kamailio htable 3-failures example; nonce_expire 300 s
    as Kamailio auth; replay at 2 sources has no published anchor (see the field).
    Known false positives: a phone moving between networks mid-nonce (replay; Wi-Fi to LTE
    within seconds); a pair of proxies failing over mid-transaction, both forwarding one
    client's credentials to the same registrar (replay); a server that issues one fixed nonce
    to everyone (replay, if two clients share a username too); a capture that sees a nonce
    late (stale is measured from first sight, so that only under-reports).
    """

    id: ClassVar[str] = "credential.nonce_reuse"
    threat: ClassVar[Threat] = Threat.CREDENTIAL
    Config: ClassVar[type[DetectorConfig]] = NonceReuseConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, NonceReuseConfig)
        cfg = self.config
        self._cfg = cfg
        self._nonces: TtlMap[str, _NonceState] = TtlMap(cfg.max_nonces, cfg.nonce_memory_s)
        # (client IP, Call-ID, request time, frame) -> (nonce, its age) of a stale use.
        self._stale: TtlMap[tuple[str, str, float, int], tuple[str, float]] = TtlMap(
            cfg.max_pending, _STALE_TIMER_F_S
        )

    def _state(self, nonce: str, now: float) -> _NonceState:
        state = self._nonces.get(nonce, now)
        if state is None:
            state = _NonceState(now)
            self._nonces.set(nonce, state, now)
        return state

    def observe(self, obs: Observation) -> list[Finding]:
        message = obs.message
        try:
            if isinstance(message, Response):
                if message.status in _CHALLENGE_STATUSES:
                    for challenge in message.challenges:
                        if challenge.is_digest and challenge.nonce:
                            self._state(challenge.nonce[:_MAX_TEXT_CHARS], obs.ts)
                return []
            if not isinstance(message, Request) or self.allowed(obs.src.ip):
                return []
            credentials = [c for c in message.authorization if c.is_digest and c.nonce]
            call_id = (message.call_id or "")[:_MAX_TEXT_CHARS]
        except (SipParseError, ValueError):
            return []
        hits: list[Finding] = []
        for cred in credentials[:2]:  # Authorization + Proxy-Authorization at most
            hits.extend(self._use(obs, message, call_id, cred))
        return hits

    def _use(
        self, obs: Observation, request: Request, call_id: str, cred: Credentials
    ) -> list[Finding]:
        cfg = self._cfg
        now = obs.ts
        nonce = (cred.nonce or "")[:_MAX_TEXT_CHARS]
        state = self._state(nonce, now)
        username = (cred.username or "")[:_MAX_TEXT_CHARS]
        source = obs.src.ip
        hits: list[Finding] = []
        age = now - state.first_seen
        if age > cfg.nonce_expire_s:
            self._stale.set((source, call_id, now, obs.frame), (nonce, age), now)
        # (a) guessing: distinct responses for identical inputs.
        responses = state.slot(state.responses, _digest_inputs(request, cred, username))
        if responses.add(hash(cred.response or "")):
            if responses.distinct >= cfg.guesses_per_nonce:
                hits.append(self._guessing(obs, call_id, username, nonce, responses.distinct))
        # (b) replay: one (nonce, username) sent to one server from several sources. Keyed by
        # the server too, as a proxy forwarding the credentials to the next hop is a new
        # source with the same nonce (both legs in one capture), but towards another server.
        sources = state.slot(state.sources, hash((username, obs.dst.ip)))
        if sources.add(hash(source)):
            if sources.distinct >= cfg.sources_per_nonce:
                hits.append(self._replay(obs, call_id, username, nonce, sources.distinct))
        return hits

    def _guessing(
        self, obs: Observation, call_id: str, username: str, nonce: str, guesses: int
    ) -> Finding:
        # The hit that crosses the threshold carries every guess so far, later ones one each:
        # the episode's count is the number of guesses.
        count = guesses if guesses == self._cfg.guesses_per_nonce else 1
        return self._hit(
            obs,
            call_id,
            80,
            f"password guessing on one nonce: {guesses} different digest responses for user "
            f"{username!r} with identical inputs from {obs.src.ip}",
            f"guessing|{obs.src.ip}",
            count,
            username,
            {"user": username, "nonce": nonce, "responses_for_same_inputs": str(guesses)},
        )

    def _replay(
        self, obs: Observation, call_id: str, username: str, nonce: str, sources: int
    ) -> Finding:
        # Keyed by the replaying source: each new source is one replay (count 1).
        return self._hit(
            obs,
            call_id,
            70,
            f"nonce replay: credentials of user {username!r} on one nonce from {sources} "
            f"source IPs (latest {obs.src.ip})",
            f"replay|{obs.src.ip}",
            1,
            username,
            {"user": username, "nonce": nonce, "sources_for_nonce": str(sources)},
        )

    def _hit(
        self,
        obs: Observation,
        call_id: str,
        confidence: int,
        summary: str,
        key: str,
        count: int,
        username: str,
        indicators: dict[str, str],
    ) -> Finding:
        """A HIGH, TEMP_BLOCK hit on the request ``obs`` (guessing and replay)."""
        return Finding(
            self.id,
            self.threat,
            Severity.HIGH,
            confidence,
            summary,
            key,
            obs.ts,
            obs.ts,
            count=count,
            source=obs.src,
            target=Target(obs.dst.ip, obs.dst.port, username or None),
            indicators=indicators,
            evidence=Evidence().add(obs.frame or None, call_id or None),
            recommended_action=RecommendedAction("TEMP_BLOCK", self._cfg.block_ttl_s),
        )

    def on_transaction(self, tx: Transaction) -> list[Finding]:
        key = (tx.client.ip, tx.call_id, tx.request_ts, tx.request_frame)
        if tx.status is None or not 200 <= tx.status < 300:
            if tx.final:
                self._stale.pop(key, tx.response_ts)
            return []
        stale = self._stale.pop(key, tx.response_ts)
        if stale is None:
            return []
        nonce, age = stale
        return [
            Finding(
                self.id,
                self.threat,
                Severity.LOW,
                60,
                f"{tx.server.ip} accepted a {tx.method} with a nonce {age:.0f} s old (more than "
                f"{self._cfg.nonce_expire_s:g} s): stale nonces widen the replay window",
                f"stale|{tx.server.ip}",
                tx.request_ts,
                tx.response_ts,
                source=tx.client,
                target=Target(tx.server.ip, tx.server.port, tx.credentials_user or None),
                indicators={
                    "nonce": nonce,
                    "nonce_age_s": f"{age:.0f}",
                    "method": tx.method,
                    "status": str(tx.status),
                },
                evidence=Evidence()
                .add(tx.request_frame or None, tx.call_id or None)
                .add(tx.response_frame or None, None),
                recommended_action=RecommendedAction("MONITOR"),
            )
        ]

    def advance(self, now: float) -> list[Finding]:
        self._nonces.expire(now)
        self._stale.expire(now)
        return []

    def next_deadline(self) -> float | None:
        deadlines = [
            d for d in (self._nonces.next_expiry(), self._stale.next_expiry()) if d is not None
        ]
        return min(deadlines) if deadlines else None

    def stats(self) -> TableStats:
        return TableStats.total((self._nonces, self._stale))

    def state_size(self) -> int:
        return self.stats().entries

    def evictions(self) -> int:
        return self.stats().evictions
