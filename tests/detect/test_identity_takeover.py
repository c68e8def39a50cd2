"""identity_takeover.binding_change: an IMPU/MSISDN that successfully registers with a new IMPI
reports a SIM swap carrying ``msisdn`` and ``imsi``; unauthenticated REGISTERs, temporary IMPUs
and re-registrations do not; bindings are forgotten after their TTL; state stays bounded.

There is no IMS capture in the corpus, so the messages are written after 3GPP TS 24.229
§5.1.1.2 (initial REGISTER with an empty-response Authorization, 401 with an AKA challenge,
REGISTER with the AKA response, 200) and TS 23.003 §13.3/§13.4B (IMSI-derived IMPI and
temporary IMPU, MNC padded to three digits)."""

from __future__ import annotations

import pydantic
import pytest

from sipwarden.detect import DETECTORS, Engine, Severity
from sipwarden.detect.detectors.identity_takeover import (
    BindingChange,
    BindingChangeConfig,
    imsi_from_impi,
    msisdn_from_impu,
)
from sipwarden.detect.tracker import Transaction
from sipwarden.net import Endpoint
from tests.detect import observe

REALM = "ims.mnc015.mcc234.3gppnetwork.org"
MSISDN = "+447700900123"
OLD_IMSI = "234150123456789"
NEW_IMSI = "234150987654321"
UE = "2001:db8:15::7"
PCSCF = "192.0.2.10"
SCSCF = "198.51.100.5"


def impi(imsi: str) -> str:
    return f"{imsi}@{REALM}"


def tx(
    private: str | None,
    public: str | None = MSISDN,
    status: int | None = 200,
    ts: float = 0.0,
    client: str = PCSCF,
    method: str = "REGISTER",
    frame: int = 2,
) -> Transaction:
    return Transaction(
        method,
        Endpoint(client, 5060),
        Endpoint(SCSCF, 5060),
        f"reg-{ts}",
        None,
        REALM,
        public,
        public,
        private,
        "",
        ts,
        frame - 1,
        status,
        ts,
        frame,
        "t1" if status else None,
    )


def register(
    imsi: str, cseq: int, branch: str, impu: str = f"sip:{MSISDN}@{REALM};user=phone"
) -> bytes:
    """A REGISTER as a UE sends it through the P-CSCF (TS 24.229 §5.1.1.2.1): IMPU in To and
    From, IMPI as the digest username; response empty on the first, the AKA answer after."""
    nonce, response = (
        ("", "") if cseq == 1 else ("A5x0bG9uZ2Fr", "6629fae49393a05397450978507c4ef1")
    )
    return (
        f"REGISTER sip:{REALM} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {PCSCF};branch=z9hG4bK{branch}\r\n"
        "Path: <sip:term@pcscf1.ims.mnc015.mcc234.3gppnetwork.org;lr>\r\n"
        "Max-Forwards: 69\r\n"
        "P-Access-Network-Info: 3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=2341500010000001F\r\n"
        f"From: <{impu}>;tag=4fa3\r\nTo: <{impu}>\r\n"
        f'Contact: <sip:[{UE}]:5060>;expires=600000;+sip.instance="<urn:gsma:imei:35209900-'
        f'176148-0>";+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.mmtel"\r\n'
        f"Call-ID: reg-{imsi}\r\n"
        f'Authorization: Digest username="{impi(imsi)}", realm="{REALM}", nonce="{nonce}", '
        f'uri="sip:{REALM}", response="{response}", algorithm=AKAv1-MD5\r\n'
        f"CSeq: {cseq} REGISTER\r\nSupported: path\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def reply(imsi: str, cseq: int, branch: str, status: int) -> bytes:
    reason = "OK" if status == 200 else "Unauthorized"
    challenge = (
        f'WWW-Authenticate: Digest realm="{REALM}", nonce="A5x0bG9uZ2Fr", '
        'algorithm=AKAv1-MD5, qop="auth"\r\n'
        if status == 401
        else f"Contact: <sip:[{UE}]:5060>;expires=600000\r\n"
    )
    impu = f"sip:{MSISDN}@{REALM};user=phone"
    return (
        f"SIP/2.0 {status} {reason}\r\nVia: SIP/2.0/UDP {PCSCF};branch=z9hG4bK{branch}\r\n"
        f"From: <{impu}>;tag=4fa3\r\nTo: <{impu}>;tag=s1\r\nCall-ID: reg-{imsi}\r\n"
        f"CSeq: {cseq} REGISTER\r\n{challenge}Content-Length: 0\r\n\r\n"
    ).encode()


def aka_registration(engine: Engine, imsi: str, ts: float, frame: int) -> None:
    """The four messages of an IMS AKA registration, P-CSCF <-> S-CSCF."""
    for i, (data, src, dst) in enumerate(
        (
            (register(imsi, 1, f"a{imsi}"), PCSCF, SCSCF),
            (reply(imsi, 1, f"a{imsi}", 401), SCSCF, PCSCF),
            (register(imsi, 2, f"b{imsi}"), PCSCF, SCSCF),
            (reply(imsi, 2, f"b{imsi}", 200), SCSCF, PCSCF),
        )
    ):
        engine.observe(observe(data, ts=ts + i * 0.1, src=src, dst=dst, frame=frame + i))


def test_registered_and_defaults_match_their_anchors() -> None:
    assert DETECTORS["identity_takeover.binding_change"] is BindingChange
    assert BindingChange.Config is BindingChangeConfig
    config = BindingChangeConfig()
    assert config.binding_ttl_s == 600_000 and config.max_bindings == 200_000
    assert config.suggested_ttl_s == 3600
    assert "TS 24.229" in (BindingChangeConfig.model_fields["binding_ttl_s"].description or "")
    for name, info in BindingChangeConfig.model_fields.items():
        assert info.description, f"{name} has no description"
    doc = BindingChange.__doc__ or ""
    assert "Signal" in doc and "Why" in doc and "anchor" in doc and "false positives" in doc
    with pytest.raises(pydantic.ValidationError, match="binding_ttl"):
        BindingChangeConfig(binding_ttl=1.0)  # type: ignore[call-arg]


def test_imsi_from_impi_follows_ts_23003() -> None:
    assert imsi_from_impi(impi(OLD_IMSI)) == OLD_IMSI
    assert imsi_from_impi("310260123456789@ims.mnc260.mcc310.3gppnetwork.org") == (
        "310260123456789"
    )
    assert imsi_from_impi("001011234567895@IMS.MNC001.MCC001.3GPPNETWORK.ORG") == (
        "001011234567895"
    )
    assert imsi_from_impi(f"208150123456789@{REALM}") is None  # MCC disagrees with the realm
    assert imsi_from_impi(f"234990123456789@{REALM}") is None  # MNC disagrees
    assert imsi_from_impi("234150123456789@ims.example.net") is None  # not IMSI-derived
    assert imsi_from_impi(f"alice@{REALM}") is None
    assert imsi_from_impi("234150123456789") is None


def test_msisdn_from_impu_takes_only_global_numbers() -> None:
    assert msisdn_from_impu("+447700900123") == "+447700900123"
    assert msisdn_from_impu("+44-7700-900123") == "+447700900123"
    assert msisdn_from_impu("07700900123") is None
    assert msisdn_from_impu("alice") is None
    assert msisdn_from_impu(None) is None


def test_fires_on_the_second_impi_not_the_first() -> None:
    detector = BindingChange()
    assert detector.on_transaction(tx(impi(OLD_IMSI), ts=0)) == []  # binds
    assert detector.on_transaction(tx(impi(OLD_IMSI), ts=3600)) == []  # re-registers
    (hit,) = detector.on_transaction(tx(impi(NEW_IMSI), ts=7200, frame=40))
    assert hit.detector == "identity_takeover.binding_change"
    assert hit.severity is Severity.MEDIUM and hit.key == MSISDN
    assert hit.indicators["event_type"] == "SIM_SWAP"
    assert hit.indicators["msisdn"] == MSISDN
    assert hit.indicators["imsi"] == NEW_IMSI
    assert hit.indicators["previous_imsi"] == OLD_IMSI
    assert hit.indicators["previous_impi"] == impi(OLD_IMSI)
    assert "7200 s" in hit.summary  # bound since the first registration, not the refresh
    assert hit.evidence.frames == (2, 39, 40)
    assert hit.recommended_action is not None
    assert hit.recommended_action.action_code == "INVESTIGATE"
    assert hit.source == Endpoint(PCSCF, 5060)
    # The new binding is now the known one: its re-registration is silent, a swap back is not.
    assert detector.on_transaction(tx(impi(NEW_IMSI), ts=7300)) == []
    assert detector.on_transaction(tx(impi(OLD_IMSI), ts=7400)) != []


def test_only_successful_registers_bind() -> None:
    detector = BindingChange()
    assert detector.on_transaction(tx(impi(OLD_IMSI), ts=0)) == []
    # Anyone can put any IMPI in an initial REGISTER; a 401/403 or no answer proves nothing.
    for status in (401, 403, None, 100):
        assert detector.on_transaction(tx(impi(NEW_IMSI), status=status, ts=10)) == []
    assert detector.on_transaction(tx(impi(NEW_IMSI), method="INVITE", ts=11)) == []
    assert detector.on_transaction(tx(impi(OLD_IMSI), ts=12)) == []  # still the old binding


def test_ignores_non_ims_accounts_and_temporary_impus() -> None:
    detector = BindingChange()
    # Plain SIP digest usernames are not IMPIs.
    assert detector.on_transaction(tx("1001", public="1001", ts=0)) == []
    assert detector.on_transaction(tx("1002", public="1001", ts=1)) == []
    assert detector.state_size() == 0
    # A temporary IMPU is derived from the IMSI (TS 23.003 §13.4B): never tracked.
    assert detector.on_transaction(tx(impi(OLD_IMSI), public=OLD_IMSI, ts=2)) == []
    assert detector.state_size() == 0
    # No credentials, no IMPU: nothing to bind.
    assert detector.on_transaction(tx(None, ts=3)) == []
    assert detector.on_transaction(tx(impi(OLD_IMSI), public=None, ts=4)) == []


def test_non_msisdn_impu_keys_by_user_and_domain() -> None:
    detector = BindingChange()
    assert detector.on_transaction(tx(f"alice.private@{REALM}", public="alice", ts=0)) == []
    (hit,) = detector.on_transaction(tx(f"mallory.private@{REALM}", public="alice", ts=1))
    assert hit.key == f"alice@{REALM}"
    assert "msisdn" not in hit.indicators and "imsi" not in hit.indicators
    assert hit.indicators["impi"] == f"mallory.private@{REALM}"


def test_binding_window_slides() -> None:
    detector = BindingChange(BindingChangeConfig(binding_ttl_s=1000))
    detector.on_transaction(tx(impi(OLD_IMSI), ts=0))
    assert detector.on_transaction(tx(impi(NEW_IMSI), ts=999.9)) != []
    detector = BindingChange(BindingChangeConfig(binding_ttl_s=1000))
    detector.on_transaction(tx(impi(OLD_IMSI), ts=0))
    detector.on_transaction(tx(impi(OLD_IMSI), ts=500))  # refresh restarts the lifetime
    assert detector.on_transaction(tx(impi(NEW_IMSI), ts=1400)) != []
    detector = BindingChange(BindingChangeConfig(binding_ttl_s=1000))
    detector.on_transaction(tx(impi(OLD_IMSI), ts=0))
    assert detector.on_transaction(tx(impi(NEW_IMSI), ts=1000)) == []  # forgotten


def test_allow_listed_client_is_silent() -> None:
    detector = BindingChange(BindingChangeConfig(allow_sources=("192.0.2.0/24",)))
    detector.on_transaction(tx(impi(OLD_IMSI), ts=0))
    assert detector.on_transaction(tx(impi(NEW_IMSI), ts=1)) == []
    assert detector.state_size() == 0


def test_state_bounded_under_hostile_impus() -> None:
    detector = BindingChange(BindingChangeConfig(max_bindings=10))
    for i in range(100):
        detector.on_transaction(tx(impi(f"2341500000{i:05d}"), public=f"+4477009{i:05d}", ts=i))
        assert detector.state_size() <= 10
    assert detector.evictions() == 90
    # Expired bindings are freed as time passes, not counted as evictions.
    detector = BindingChange(BindingChangeConfig(max_bindings=10, binding_ttl_s=5))
    for i in range(100):
        detector.on_transaction(tx(impi(f"2341500000{i:05d}"), public=f"+4477009{i:05d}", ts=i))
    assert detector.evictions() == 0 and detector.state_size() <= 5


def test_aka_registrations_through_the_engine() -> None:
    engine = Engine([BindingChange()])
    aka_registration(engine, OLD_IMSI, ts=0, frame=1)
    aka_registration(engine, OLD_IMSI, ts=3000, frame=5)  # re-registration
    aka_registration(engine, NEW_IMSI, ts=90_000, frame=9)  # the new SIM
    (finding,) = engine.finish()
    data = finding.to_json()
    assert data["detector"] == "identity_takeover.binding_change"
    assert data["indicators"]["msisdn"] == MSISDN and data["indicators"]["imsi"] == NEW_IMSI
    assert data["indicators"]["previous_imsi"] == OLD_IMSI
    assert data["source"]["ip"] == PCSCF and data["target"]["user"] == MSISDN
    assert data["evidence"]["frames"] == [4, 11, 12]  # old 200; new REGISTER and its 200


def test_tel_and_sip_forms_of_one_msisdn_are_one_binding() -> None:
    engine = Engine([BindingChange()])
    aka_registration(engine, OLD_IMSI, ts=0, frame=1)
    for i, (data, src, dst) in enumerate(
        (
            (register(NEW_IMSI, 2, "t1", impu=f"tel:{MSISDN}"), PCSCF, SCSCF),
            (reply(NEW_IMSI, 2, "t1", 200), SCSCF, PCSCF),
        )
    ):
        engine.observe(observe(data, ts=100 + i, src=src, dst=dst, frame=20 + i))
    (finding,) = engine.finish()
    assert finding.key == MSISDN


def test_finding_maps_to_a_sim_swap_event() -> None:
    events = pytest.importorskip("sipwarden.output.events")
    detector = BindingChange()
    detector.on_transaction(tx(impi(OLD_IMSI), ts=0))
    (hit,) = detector.on_transaction(tx(impi(NEW_IMSI), ts=1))
    message = events.finding_event(hit, "operator-a")
    assert message["event"]["event_type"] == "SIM_SWAP"
    assert message["event"]["msisdn"] == MSISDN and message["event"]["imsi"] == NEW_IMSI
