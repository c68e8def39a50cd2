"""identity_takeover: SIM swap and IMS identity rebinding (conventions.md §1).

Theory of operation
-------------------
In IMS a subscriber has a private identity, the IMPI, which the network authenticates (AKA
against the ISIM/USIM), and public identities, IMPUs, by which others reach it - a ``tel:`` URI
or ``sip:+E164@domain;user=phone`` carrying the MSISDN, or a SIP URI (3GPP TS 23.228 §4.3.3,
TS 23.003 §13). A REGISTER names both (TS 24.229 §5.1.1.2): the IMPU in To and the IMPI as
the ``username`` of the Authorization header; when no ISIM is present the IMPI is derived from
the IMSI, ``<IMSI>@ims.mnc<MNC>.mcc<MCC>.3gppnetwork.org`` (TS 23.003 §13.3, MNC padded to
three digits).

:class:`BindingChange` remembers which IMPI last registered each IMPU successfully and reports
when a *successful* (2xx) REGISTER binds the IMPU to a different IMPI: the MSISDN now answers
to another SIM. It reads :class:`Transaction`\\ s from the engine's tracker, so the 2xx is
matched to the request that carried the credentials.

What counts: only a 2xx. The first REGISTER of a 3GPP UE carries the IMPI too, with an empty
``response`` (TS 24.229 §5.1.1.2.1), and is answered 401 - but anyone can write any IMPI there,
so an unauthenticated REGISTER neither binds nor rebinds; a 2xx means the network authenticated
that IMPI. A temporary IMPU (``sip:<IMSI>@…``, TS 23.003 §13.4B) is derived from the IMSI and
changes with it by definition, so it is not tracked. Usernames that are not NAIs (no ``@``) are
plain SIP digest accounts, not IMPIs, and are ignored.

The bindings live in a bounded :class:`TtlMap` keyed by the IMPU (the MSISDN in E.164 when the
IMPU carries one, so ``tel:`` and ``sip:…;user=phone`` forms agree); each successful REGISTER
refreshes its binding, so an IMPU is forgotten ``binding_ttl_s`` after its last registration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from sipwarden.detect.base import Detector, DetectorConfig
from sipwarden.detect.finding import Evidence, Finding, RecommendedAction, Target
from sipwarden.detect.observation import Observation
from sipwarden.detect.registry import register
from sipwarden.detect.tables import TtlMap
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.detect.tracker import Transaction

__all__ = ["BindingChange", "BindingChangeConfig", "imsi_from_impi", "msisdn_from_impu"]

#: Attacker-chosen strings kept in tables and indicators are cut to this length.
_MAX_TEXT_CHARS = 128
#: TS 23.003 §13.3: the IMSI-derived IMPI realm; MNC zero-padded to three digits.
_IMSI_REALM = re.compile(r"ims\.mnc([0-9]{3})\.mcc([0-9]{3})\.3gppnetwork\.org", re.IGNORECASE)
#: An IMSI is at most 15 digits (TS 23.003 §2.2); the FS.38 event schema accepts 14-15.
_IMSI = re.compile(r"[0-9]{14,15}")
#: E.164 allows at most 15 digits and no leading 0 in the country code (ITU-T E.164 §6).
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SEPARATORS = str.maketrans("", "", "-.() ")


def imsi_from_impi(impi: str) -> str | None:
    """The IMSI of an IMSI-derived IMPI (TS 23.003 §13.3), else None: the user part must be
    14-15 digits starting with the realm's MCC and (unpadded or padded) MNC."""
    user, at, realm = impi.partition("@")
    match = _IMSI_REALM.fullmatch(realm) if at else None
    if match is None or not _IMSI.fullmatch(user):
        return None
    mnc, mcc = match.group(1), match.group(2)
    if not user.startswith(mcc):
        return None
    msin_and_mnc = user[3:]
    if not (msin_and_mnc.startswith(mnc) or (mnc[0] == "0" and msin_and_mnc.startswith(mnc[1:]))):
        return None
    return user


def msisdn_from_impu(user: str | None) -> str | None:
    """The MSISDN (E.164 with '+') an IMPU's user part carries, else None. Only the global
    '+' form is taken: a national number needs a numbering plan the REGISTER does not give."""
    if not user:
        return None
    digits = user.translate(_SEPARATORS)
    return digits if _E164.fullmatch(digits) else None


class BindingChangeConfig(DetectorConfig):
    binding_ttl_s: float = Field(
        600_000.0,
        gt=0,
        description=(
            "How long an IMPU's last successful binding is remembered after its last "
            "registration, in seconds. Default 600 000 s (~6.9 days), the registration "
            "lifetime a UE requests in its initial REGISTER (3GPP TS 24.229 §5.1.1.2.1), so a "
            "binding outlives one whole registration even if the old device falls silent."
        ),
    )
    max_bindings: int = Field(
        200_000,
        ge=1,
        description=(
            "Most IMPUs remembered at once (about 0.3 KB each); the least recently registered "
            "is evicted first and counted. No published anchor: sized for a capture or HEP "
            "feed of a regional S-CSCF; raise it to the subscriber count for full coverage."
        ),
    )
    suggested_ttl_s: int = Field(
        3600,
        ge=1,
        description=(
            "Suggested duration of the recommended INVESTIGATE action, seconds: the TTL of "
            "the FS.38 SIM_SWAP seed example (exchange-stir-diameter.md, conventions §4)."
        ),
    )


@dataclass(frozen=True, slots=True)
class _Binding:
    impi: str
    #: When this IMPI was first seen bound to the IMPU, and the frame of that 2xx.
    since: float
    frame: int


@register
class BindingChange(Detector):
    """An IMPU/MSISDN that successfully registers with a new IMPI/IMSI: a SIM swap.

    Signal: a 2xx to a REGISTER whose To user (the IMPU) was last bound, within
    ``binding_ttl_s``, to another IMPI (the Authorization username) than the one it now
    registered with. The finding carries indicators ``msisdn`` (E.164, when the IMPU carries
    one) and ``imsi`` (when the IMPI is IMSI-derived) plus the previous ones, which the FS.38
    mapping turns into a SIM_SWAP event (conventions.md §4). Why: a fraudster who talks a
    shop into moving a victim's number to a new SIM receives the victim's calls and SMS codes;
    the IMS registration is where the new SIM first shows up (exchange-stir-diameter.md §C.3).
    Defaults' anchor: TS 24.229 §5.1.1.2.1 registration lifetime (600 000 s) for the memory;
    the FS.38 SIM_SWAP seed example for the action's TTL. No system in detection-anchors.md
    correlates these identities (§4 item 2).
    Severity: medium - SIP alone cannot tell a fraudulent swap from a customer's new SIM;
    corroborate with the HSS (S6a/Sh) before blocking.
    Known false positives: legitimate SIM replacement; an IMPU shared by several IMPIs
    (TS 23.228 shared public identities, multi-device) - allow-list those registrars' clients
    or expect a finding at every alternation.
    """

    id: ClassVar[str] = "identity_takeover.binding_change"
    threat: ClassVar[Threat] = Threat.IDENTITY_TAKEOVER
    Config: ClassVar[type[DetectorConfig]] = BindingChangeConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, BindingChangeConfig)
        self._ttl = self.config.suggested_ttl_s
        self._bindings: TtlMap[str, _Binding] = TtlMap(
            self.config.max_bindings, self.config.binding_ttl_s
        )

    def observe(self, obs: Observation) -> list[Finding]:
        return []  # everything comes from matched transactions

    def on_transaction(self, tx: Transaction) -> list[Finding]:
        if tx.method != "REGISTER" or tx.status is None or not 200 <= tx.status < 300:
            return []
        impi, impu = tx.credentials_user, tx.to_user
        if not impi or not impu or "@" not in impi or self.allowed(tx.client.ip):
            return []
        impi = impi[:_MAX_TEXT_CHARS].lower()
        imsi = imsi_from_impi(impi)
        if imsi is not None and impu.translate(_SEPARATORS) == imsi:
            return []  # a temporary IMPU (TS 23.003 §13.4B) changes with the IMSI by design
        now = tx.response_ts
        self._bindings.expire(now)  # amortised O(1): frees what expired, keeps memory honest
        msisdn = msisdn_from_impu(impu)
        key = msisdn or f"{impu}@{tx.request_uri_host or ''}"[:_MAX_TEXT_CHARS].lower()
        previous = self._bindings.get(key, now)
        if previous is not None and previous.impi == impi:
            self._bindings.set(key, previous, now)  # a re-registration: refresh, keep since
            return []
        self._bindings.set(key, _Binding(impi, now, tx.response_frame), now)
        if previous is None:
            return []
        return [self._finding(tx, key, impu[:_MAX_TEXT_CHARS], msisdn, impi, imsi, previous)]

    def _finding(
        self,
        tx: Transaction,
        key: str,
        impu: str,
        msisdn: str | None,
        impi: str,
        imsi: str | None,
        previous: _Binding,
    ) -> Finding:
        previous_imsi = imsi_from_impi(previous.impi)
        indicators = {"event_type": "SIM_SWAP", "impu": impu, "impi": impi}
        indicators["previous_impi"] = previous.impi
        if msisdn is not None:
            indicators["msisdn"] = msisdn
        if imsi is not None:
            indicators["imsi"] = imsi
        if previous_imsi is not None:
            indicators["previous_imsi"] = previous_imsi
        who = msisdn or impu
        old, new = previous_imsi or previous.impi, imsi or impi
        evidence = Evidence().add(previous.frame or None, None)
        evidence = evidence.add(tx.request_frame or None, tx.call_id or None)
        evidence = evidence.add(tx.response_frame or None, None)
        return Finding(
            self.id,
            self.threat,
            Severity.MEDIUM,
            70,
            f"{who} registered with a new identity {new} (bound to {old} for "
            f"{tx.response_ts - previous.since:.0f} s before)",
            key,
            tx.response_ts,
            tx.response_ts,
            source=tx.client,
            target=Target(tx.server.ip, tx.server.port, impu),
            indicators=indicators,
            evidence=evidence,
            recommended_action=RecommendedAction("INVESTIGATE", self._ttl),
        )

    def state_size(self) -> int:
        return len(self._bindings)

    def evictions(self) -> int:
        return self._bindings.evictions
