"""One network-list setting type and one membership test for every detector."""

from __future__ import annotations

import pydantic
import pytest

from sipwarden.detect.base import DetectorConfig
from sipwarden.detect.networks import NetworkSet, check_networks


def test_membership_of_packet_addresses() -> None:
    nets = NetworkSet(("10.0.0.0/8", "2001:db8::/32", "192.0.2.7"))
    assert "10.1.2.3" in nets and "192.0.2.7" in nets and "192.0.2.8" not in nets
    assert "2001:db8::1" in nets and "[2001:db8::1]" in nets
    assert "::ffff:10.9.9.9" in nets  # IPv4-mapped IPv6 is the IPv4 address
    assert "not-an-ip" not in nets and "" not in nets


def test_empty_set_is_false_and_contains_nothing() -> None:
    nets = NetworkSet(())
    assert not nets and "10.0.0.1" not in nets


def test_invalid_entries_are_named() -> None:
    assert check_networks(("10.0.0.1/8",)) == ("10.0.0.1/8",)  # host bits allowed
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300' is not an IP address or CIDR network"):
        check_networks(("10.0.0.300",))
    with pytest.raises(pydantic.ValidationError, match=r"'pbx\.example' is not an IP address"):
        DetectorConfig(allow_sources=("pbx.example",))
