"""Transaction and call tracker: what several detectors need to know about *pairs* of messages.

Theory of operation
-------------------
Detectors see one :class:`Observation` at a time. Some questions need two or more: which request
did this 404 answer, was that INVITE carrying credentials when it got its 200, how long did the
phone ring before the CANCEL, how many answered calls does this account have right now. The
engine runs one :class:`Tracker` before its detectors and hands them what it derives:

* :class:`Transaction` - a request and a response that answered it, matched as RFC 3261
  §17.1.3 says (top Via branch + CSeq method; for a pre-3261 branch, Call-ID + CSeq). It is
  emitted for the first 18x and for the final response (retransmissions are not re-emitted),
  and with ``status=None`` when no final response came in time: within Timer B/F (64×T1 =
  32 s), or, for an INVITE that got a provisional response (which stops Timer B, §17.1.1.2),
  within ``ring_timeout_s``. An unanswered probe is reported as such.
* :class:`CallEvent` - a phase of a call (an INVITE dialog): ``STARTED`` (the initial INVITE),
  ``RINGING`` (first 180/183), ``ANSWERED`` (first 2xx), ``ENDED`` (BYE, CANCEL, a final failure,
  or a timeout). Each carries an immutable :class:`Call` snapshot and the concurrency of the
  caller's account and source at that moment.
* Authentication state per (client IP, user): challenged, failed, succeeded
  (:meth:`Tracker.auth_state`).

Calls are keyed by Call-ID and created only by an INVITE without a To tag; a re-INVITE or a
retransmission does not start a call. ``account`` is the digest username of the last INVITE of
the call that carried credentials, else the From user at the source IP (``user@ip``: a claim
is not an identity). Concurrency counts *answered* calls that
have not ended, per account and per source IP (OpenSIPS fraud_detection's definition, but
decremented on every ending - its #949 bug was forgetting CANCEL/busy).

Everything is bounded: pending transactions, live calls and auth states live in
:class:`TtlMap`s with a maximum size; evictions are counted. An evicted live call is ended with
``CallEnd.EVICTED`` so concurrency never leaks upward.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from sipwarden.detect.observation import Observation
from sipwarden.detect.tables import TtlMap
from sipwarden.net import Endpoint
from sipwarden.sip import NameAddr, Request, Response, SipParseError

__all__ = [
    "AuthState",
    "Call",
    "CallEnd",
    "CallEvent",
    "CallPhase",
    "Tracker",
    "TrackerConfig",
    "TrackerEvent",
    "Transaction",
]

#: Attacker-chosen strings kept in tables are cut to this length.
MAX_TEXT_CHARS = 128
_RFC3261_COOKIE = "z9hG4bK"


class TrackerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transaction_timeout_s: float = Field(
        32.0,
        gt=0,
        description=(
            "A request with no final response after this long is reported unanswered. 64×T1 = "
            "32 s, RFC 3261 §17.1.1.2 Timer B / §17.1.2.2 Timer F."
        ),
    )
    ring_timeout_s: float = Field(
        180.0,
        gt=0,
        description=(
            "An INVITE still unanswered after this long is ended as timed out (3 min, the "
            "common PBX/SBC no-answer limit; Timer C is > 3 min in RFC 3261 §16.6)."
        ),
    )
    max_call_duration_s: float = Field(
        43_200.0,
        gt=0,
        description=(
            "An answered call with no BYE seen for this long is ended as timed out (12 h, "
            "Kamailio dialog's default_timeout)."
        ),
    )
    auth_memory_s: float = Field(
        3600.0,
        gt=0,
        description="How long authentication state per (client IP, user) is remembered.",
    )
    max_transactions: int = Field(200_000, ge=1, description="Pending transactions held.")
    max_calls: int = Field(100_000, ge=1, description="Calls (ringing or answered) held.")
    max_auth_states: int = Field(100_000, ge=1, description="(client IP, user) auth states held.")


class Transaction(NamedTuple):
    """A request and one response that answered it (or ``status=None``: unanswered)."""

    method: str
    #: The request's source (the UAC) and destination (the server it asked).
    client: Endpoint
    server: Endpoint
    call_id: str
    request_uri_user: str | None
    request_uri_host: str | None
    from_user: str | None
    to_user: str | None
    #: Digest username when the request carried Authorization/Proxy-Authorization, else None.
    credentials_user: str | None
    user_agent: str
    request_ts: float
    request_frame: int
    #: The response's status (first 18x or the final), or None when none came in time.
    status: int | None
    response_ts: float
    response_frame: int
    #: The To tag of the response (None for unanswered or tag-less responses).
    to_tag: str | None
    #: The request carried a To tag: it belongs to an established dialog (a re-INVITE, a BYE),
    #: not a new call or a probe.
    in_dialog: bool = False

    @property
    def final(self) -> bool:
        return self.status is None or self.status >= 200


class CallPhase(StrEnum):
    STARTED = "started"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


class CallEnd(StrEnum):
    BYE = "bye"  # answered, then hung up
    CANCELLED = "cancelled"  # the caller gave up while it rang (CANCEL / 487)
    FAILED = "failed"  # a final failure response (4xx-6xx other than 487)
    TIMEOUT = "timeout"  # no answer or no BYE in time (see TrackerConfig)
    EVICTED = "evicted"  # dropped to keep the table bounded


@dataclass(frozen=True, slots=True)
class Call:
    """An INVITE dialog as seen so far (immutable snapshot; the tracker replaces it)."""

    call_id: str
    #: The initial INVITE's packet source and destination.
    src: Endpoint
    dst: Endpoint
    #: From user (a number or name) and Request-URI user (what was dialled).
    caller: str | None
    callee: str | None
    #: Request-URI host (the domain the call was sent to).
    callee_host: str | None
    #: P-Asserted-Identity user of the initial INVITE, if any.
    asserted: str | None
    #: Digest username of the last INVITE that carried credentials, else the From user *at the
    #: source IP* ("1001@192.0.2.10"): an unauthenticated From user is only a claim, and any
    #: sender can make it, so it is never pooled with the same claim from elsewhere.
    account: str | None
    #: True once an INVITE of this call carried credentials.
    authenticated: bool
    user_agent: str
    started: float
    first_frame: int
    ringing: float | None = None
    answered: float | None = None
    ended: float | None = None
    end: CallEnd | None = None
    #: The final status of the INVITE (200, 486, 487 ...), when seen.
    final_status: int | None = None

    @property
    def ring_time(self) -> float | None:
        """Seconds from INVITE to answer or, unanswered, to the end."""
        stop = self.answered if self.answered is not None else self.ended
        return None if stop is None else stop - self.started

    @property
    def duration(self) -> float | None:
        """Seconds from answer to end (answered calls that ended)."""
        if self.answered is None or self.ended is None:
            return None
        return self.ended - self.answered


class CallEvent(NamedTuple):
    phase: CallPhase
    call: Call
    ts: float
    #: Frame of the message that caused it (0 for a timeout).
    frame: int
    #: Answered, not ended calls of this call's account and of its source IP, after this event.
    concurrent_account: int
    concurrent_source: int


@dataclass(slots=True)
class AuthState:
    """Digest authentication seen for one (client IP, user)."""

    challenged: int = 0
    failed: int = 0
    succeeded: int = 0
    last_success: float | None = None


TrackerEvent = Transaction | CallEvent


class _Live:
    """A table slot holding the current snapshot, so updates keep the entry's deadline."""

    __slots__ = ("call",)

    def __init__(self, call: Call) -> None:
        self.call = call


class _Pending(NamedTuple):
    tx: Transaction
    #: Statuses already reported (first 18x, final) so retransmissions are not.
    reported_provisional: bool
    reported_final: bool


def _cut(text: str | None) -> str | None:
    return text[:MAX_TEXT_CHARS] if text else None


def _claimed_account(tx: Transaction) -> str | None:
    return f"{tx.from_user}@{tx.client.ip}" if tx.from_user else None


def _user(address: NameAddr | None) -> str | None:
    """The URI user of a From/To/PAI value; None when absent or its URI does not parse (the
    URI is parsed lazily and raises ValueError; the malformed detectors report that)."""
    if address is None:
        return None
    try:
        return _cut(address.uri.user)
    except ValueError:
        return None


class Tracker:
    """Matches responses to requests and follows calls; pure and bounded (see module doc)."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config if config is not None else TrackerConfig()
        c = self.config
        self._tx: TtlMap[tuple[str, str, str], _Pending] = TtlMap(
            c.max_transactions, c.transaction_timeout_s
        )
        # INVITE transactions in the Proceeding state (a 1xx arrived): Timer B no longer runs,
        # the phone may ring for minutes (one TTL per map keeps deadline order = LRU order).
        self._proceeding: TtlMap[tuple[str, str, str], _Pending] = TtlMap(
            c.max_transactions, c.ring_timeout_s
        )
        # Ringing calls live ring_timeout_s; answered ones are re-set with a longer deadline by
        # moving them to the answered map (one TTL per map keeps deadline order = LRU order).
        self._ringing: TtlMap[str, _Live] = TtlMap(c.max_calls, c.ring_timeout_s)
        self._answered: TtlMap[str, _Live] = TtlMap(c.max_calls, c.max_call_duration_s)
        self._auth: TtlMap[tuple[str, str], AuthState] = TtlMap(c.max_auth_states, c.auth_memory_s)
        self._by_account: Counter[str] = Counter()
        self._by_source: Counter[str] = Counter()

    # -- queries -------------------------------------------------------------------------------
    def auth_state(self, client_ip: str, user: str, now: float) -> AuthState | None:
        return self._auth.get((client_ip, user), now)

    def concurrent(self, account: str | None = None, source_ip: str | None = None) -> int:
        if account is not None:
            return self._by_account.get(account, 0)
        return self._by_source.get(source_ip or "", 0)

    def state_size(self) -> int:
        return sum(len(t) for t in self._tables())

    def evictions(self) -> int:
        return sum(t.evictions for t in self._tables())

    def _tables(self) -> tuple[TtlMap[Any, Any], ...]:
        return (self._tx, self._proceeding, self._ringing, self._answered, self._auth)

    # -- input ---------------------------------------------------------------------------------
    def observe(self, obs: Observation) -> list[TrackerEvent]:
        events = self.advance(obs.ts)
        message = obs.message
        try:
            if isinstance(message, Request):
                self._request(obs, message, events)
            elif isinstance(message, Response):
                self._response(obs, message, events)
        except (SipParseError, ValueError):
            # A header we need is broken (typed headers and lazily parsed URIs raise these):
            # the malformed detectors report it; the tracker skips the message.
            pass
        return events

    def advance(self, now: float) -> list[TrackerEvent]:
        """Time passes: unanswered transactions and timed-out calls are reported."""
        events: list[TrackerEvent] = []
        for _, pending in [*self._tx.expire(now), *self._proceeding.expire(now)]:
            if not pending.reported_final:
                tx = pending.tx
                events.append(
                    tx._replace(status=None, response_ts=now, response_frame=0, to_tag=None)
                )
        for table in (self._ringing, self._answered):
            for _, live in table.expire(now):
                events.append(self._end(live.call, now, 0, CallEnd.TIMEOUT, None))
        return events

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for d in (
                self._tx.next_expiry(),
                self._proceeding.next_expiry(),
                self._ringing.next_expiry(),
                self._answered.next_expiry(),
            )
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    # -- requests ------------------------------------------------------------------------------
    def _request(self, obs: Observation, request: Request, events: list[TrackerEvent]) -> None:
        method = request.method
        call_id = _cut(request.call_id) or ""
        key = self._tx_key(obs.src.ip, request, method, call_id)
        if key is None:
            return
        if method != "ACK" and self._pending(key, obs.ts) is None:  # not a retransmission
            credentials = request.authorization
            uri = request.request_uri
            user_agent = request.headers.get("user-agent") or ""
            to = request.to
            tx = Transaction(
                method,
                obs.src,
                obs.dst,
                call_id,
                _cut(uri.user),
                _cut(uri.host),
                _user(request.from_),
                _user(to),
                _cut(credentials[0].username) if credentials else None,
                user_agent[:200],
                obs.ts,
                obs.frame,
                None,
                obs.ts,
                0,
                None,
                to is not None and bool(to.tag),
            )
            self._tx.set(key, _Pending(tx, False, False), obs.ts)
            if method == "INVITE":
                self._invite(obs, request, tx, events)
        if method == "BYE":
            answered = self._answered.pop(call_id, obs.ts)
            if answered is not None:
                call = answered.call
                events.append(self._end(call, obs.ts, obs.frame, CallEnd.BYE, call.final_status))
        elif method == "CANCEL":
            # Ended on the CANCEL itself: a capture may not see the 487.
            ringing = self._ringing.pop(call_id, obs.ts)
            if ringing is not None:
                events.append(self._end(ringing.call, obs.ts, obs.frame, CallEnd.CANCELLED, None))

    def _invite(
        self, obs: Observation, request: Request, tx: Transaction, events: list[TrackerEvent]
    ) -> None:
        call_id = tx.call_id
        existing = self._ringing.get(call_id, obs.ts)
        if existing is not None:
            # The same call again, typically after a 401/407 with credentials: same call.
            if tx.credentials_user:
                existing.call = dataclasses.replace(
                    existing.call, account=tx.credentials_user, authenticated=True
                )
            return
        if tx.in_dialog:
            return  # a re-INVITE within a dialog
        if self._answered.get(call_id, obs.ts) is not None:
            return
        pai = request.p_asserted_identity
        call = Call(
            call_id,
            obs.src,
            obs.dst,
            tx.from_user,
            tx.request_uri_user,
            tx.request_uri_host,
            _user(pai[0]) if pai else None,
            tx.credentials_user or _claimed_account(tx),
            tx.credentials_user is not None,
            tx.user_agent,
            obs.ts,
            obs.frame,
        )
        self._store(self._ringing, call, obs.ts, events)
        events.append(self._event(CallPhase.STARTED, call, obs))

    # -- responses -----------------------------------------------------------------------------
    def _response(self, obs: Observation, response: Response, events: list[TrackerEvent]) -> None:
        status = response.status
        cseq = response.cseq
        if cseq is None:
            return
        method = cseq.method.upper()
        call_id = _cut(response.call_id) or ""
        key = self._tx_key(obs.dst.ip, response, method, call_id)
        if key is None:
            return
        found = self._pending(key, obs.ts)
        if found is not None:
            table, pending = found
            final = status >= 200
            if method == "INVITE" and not final and table is self._tx:
                # Proceeding: from now on the INVITE may wait for its answer as long as a
                # phone rings.
                self._tx.pop(key, obs.ts)
                table = self._proceeding
                table.set(key, pending, obs.ts)
            if final and not pending.reported_final:
                table.set(key, pending._replace(reported_final=True), obs.ts)
                events.append(self._answer(pending.tx, obs, response))
            elif (
                status > 100
                and not final
                and not pending.reported_provisional
                and not pending.reported_final
            ):
                table.set(key, pending._replace(reported_provisional=True), obs.ts)
                events.append(self._answer(pending.tx, obs, response))
            if final:
                self._authenticate(pending.tx, status, obs.ts)
        if method == "INVITE":
            self._invite_response(obs, call_id, status, events)

    def _pending(
        self, key: tuple[str, str, str], now: float
    ) -> tuple[TtlMap[tuple[str, str, str], _Pending], _Pending] | None:
        """The transaction ``key`` and the table holding it, if it is still pending."""
        for table in (self._tx, self._proceeding):
            pending = table.get(key, now)
            if pending is not None:
                return table, pending
        return None

    @staticmethod
    def _answer(tx: Transaction, obs: Observation, response: Response) -> Transaction:
        to = response.to
        return tx._replace(
            status=response.status,
            response_ts=obs.ts,
            response_frame=obs.frame,
            to_tag=_cut(to.tag) if to is not None else None,
        )

    def _authenticate(self, tx: Transaction, status: int, now: float) -> None:
        if tx.method not in {"REGISTER", "INVITE"}:
            return
        user = tx.credentials_user or (tx.to_user if tx.method == "REGISTER" else tx.from_user)
        if not user:
            return
        key = (tx.client.ip, user)
        state = self._auth.get(key, now) or AuthState()
        if status in {401, 407}:
            if tx.credentials_user:
                state.failed += 1
            else:
                state.challenged += 1
        elif status == 403:
            state.failed += 1
        elif 200 <= status < 300 and tx.credentials_user:
            state.succeeded += 1
            state.last_success = now
        else:
            return
        self._auth.set(key, state, now)

    def _invite_response(
        self, obs: Observation, call_id: str, status: int, events: list[TrackerEvent]
    ) -> None:
        now = obs.ts
        live = self._ringing.get(call_id, now)
        if live is None:
            return
        call = live.call
        if status in {180, 183} and call.ringing is None:
            live.call = call = dataclasses.replace(call, ringing=now)
            events.append(self._event(CallPhase.RINGING, call, obs))
        elif 200 <= status < 300:
            self._ringing.pop(call_id, now)
            call = dataclasses.replace(call, answered=now, final_status=status)
            self._store(self._answered, call, now, events)
            self._count(call, +1)
            events.append(self._event(CallPhase.ANSWERED, call, obs))
        elif status >= 300 and status not in {401, 407}:
            # A 401/407 is the first half of digest auth: the call goes on with credentials.
            self._ringing.pop(call_id, now)
            end = CallEnd.CANCELLED if status == 487 else CallEnd.FAILED
            events.append(self._end(call, now, obs.frame, end, status))

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _tx_key(
        client_ip: str, message: Request | Response, method: str, call_id: str
    ) -> tuple[str, str, str] | None:
        """RFC 3261 §17.1.3 (branch + method), scoped by the client's IP (a request's source,
        a response's destination) so one sender's branches cannot match another's."""
        via = message.via
        if not via:
            return None
        branch = via[0].branch or ""
        if branch.startswith(_RFC3261_COOKIE):
            # CANCEL and ACK share the INVITE's branch; the method keeps them apart.
            return (client_ip, method, branch[:MAX_TEXT_CHARS])
        cseq = message.cseq
        return (client_ip, method, f"{call_id}\x00{cseq.number if cseq else ''}")

    def _store(
        self, table: TtlMap[str, _Live], call: Call, now: float, events: list[TrackerEvent]
    ) -> None:
        evicted = table.set(call.call_id, _Live(call), now)
        if evicted is not None:
            events.append(self._end(evicted[1].call, now, 0, CallEnd.EVICTED, None))

    def _count(self, call: Call, delta: int) -> None:
        for counter, key in ((self._by_account, call.account), (self._by_source, call.src.ip)):
            if not key:
                continue
            counter[key] += delta
            if counter[key] <= 0:
                del counter[key]

    def _end(
        self, call: Call, now: float, frame: int, end: CallEnd, status: int | None
    ) -> CallEvent:
        if call.answered is not None:
            self._count(call, -1)
        ended = dataclasses.replace(call, ended=now, end=end, final_status=status)
        return CallEvent(
            CallPhase.ENDED,
            ended,
            now,
            frame,
            self._by_account.get(call.account or "", 0),
            self._by_source.get(call.src.ip, 0),
        )

    def _event(self, phase: CallPhase, call: Call, obs: Observation) -> CallEvent:
        return CallEvent(
            phase,
            call,
            obs.ts,
            obs.frame,
            self._by_account.get(call.account or "", 0),
            self._by_source.get(call.src.ip, 0),
        )
