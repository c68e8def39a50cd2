"""Our parser and Wireshark's SIP dissector read the same real captures the same way.

tshark (Debian package ``tshark``) decodes every SIP-over-UDP datagram of the shared captures;
for each one we parse the UDP payload ourselves and compare the fields both tools extract:
method or status, Call-ID, CSeq number, From tag, To tag, top Via branch.
"""

from __future__ import annotations

import subprocess

import pytest

from sipwarden.sip import Request, SipParseError, parse_message
from tests.conftest import need_shared, need_tool

pytestmark = pytest.mark.integration

CAPTURES = [
    "attack/initconf--BadUserAgent-sipvicious.pcap",
    "attack/initconf--SIP-3700-unauthorized-401.pcap",
    "attack/initconf--SIP-Bruteforce-Single-IP.pcap",
    "attack/initconf--SIP-212.32.250.134.pcap",
    "normal/heplify--sip_ipv6_udp.pcap",
    "normal/ndpi--FAX-Call-t38-CA-TDM-SIP-FB-1.pcap",
    "normal/snort3_demo--SIP_Eyebeam2Eyebeam_Video_Audio.pcap",
    "normal/snort3_demo--digium.pcap",
    "normal/suricata-verify--cloudshark-sip-s0.pcap",
    "normal/suricata-verify--sip-invite-sdp-200.pcap",
    "normal/suricata-verify--sip-options-200.pcap",
    "normal/suricata-verify--sip-udp-register-401.pcap",
    "normal/suricata-verify--wireshark-aaa-sip-rtp.pcap",
    "edge/suricata-verify--sip_compact_form.pcap",
    "edge/zeek--sip-long-request-response-paths.pcap",
]
FIELDS = [
    "frame.number",
    "udp.payload",
    "sip.Method",
    "sip.Status-Code",
    "sip.Call-ID",
    "sip.CSeq.seq",
    "sip.from.tag",
    "sip.to.tag",
    "sip.Via.branch",
]


def _tshark_rows(tshark: str, capture: str) -> list[list[str]]:
    args = [
        tshark,
        "-n",
        "-r",
        capture,
        "-Y",
        "sip && udp",
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-E",
        "occurrence=f",
    ]
    for name in FIELDS:
        args += ["-e", name]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


@pytest.mark.parametrize("capture", CAPTURES)
def test_fields_agree_with_tshark(capture: str) -> None:
    tshark = need_tool("tshark", "tshark")
    path = need_shared(f"corpus/pcap/{capture}")
    rows = _tshark_rows(tshark, str(path))
    assert rows, "tshark found no SIP over UDP"
    compared = 0
    for frame, payload, method, status, call_id, cseq, from_tag, to_tag, branch in rows:
        if not payload:
            continue  # a reassembled or otherwise payload-less row
        try:
            msg = parse_message(bytes.fromhex(payload))
        except SipParseError as exc:
            pytest.fail(f"frame {frame}: tshark reads SIP, we raise {exc}")
        ours = {
            "method": msg.method if isinstance(msg, Request) else "",
            "status": "" if isinstance(msg, Request) else str(msg.status),
            "call_id": msg.call_id or "",
            "cseq": str(msg.cseq.number) if msg.cseq else "",
            "from_tag": (msg.from_.tag if msg.from_ else None) or "",
            "to_tag": (msg.to.tag if msg.to else None) or "",
            "branch": msg.via[0].branch or "",
        }
        theirs = dict(
            zip(ours, (method, status, call_id, cseq, from_tag, to_tag, branch), strict=True)
        )
        # Where tshark extracted a value, ours must be the same. tshark gives up on a few
        # malformed lines (IPv6 sent-by without brackets, bare-LF lines) where we still read.
        for name, value in theirs.items():
            if value:
                assert ours[name] == value, f"frame {frame}: {name}"
        compared += 1
    assert compared > 0
