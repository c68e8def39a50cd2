"""output/blocklist.py: plain, ipset and nftables exports parse and say what the store holds.

nft and ipset are not installed here (and tests do not install them), so each format is checked
against its grammar: every line is one of the statements ``ipset restore`` / ``nft -f`` accept,
with valid networks, names and timeouts. (These tests live under tests/store/ because their
subject is the store's entries; move them to tests/output/ if preferred.)
"""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwarden.errors import InputError
from sipwarden.output.blocklist import IPSET_MAX_TIMEOUT_S, to_ipset, to_nftables, to_plain
from sipwarden.store import BlockEntry, MemoryBlocklistStore

T0 = 1_700_000_000.0

IPSET_LINE = re.compile(
    r"create (?P<cset>\S+) hash:net family (?P<family>inet6?) timeout 0 maxelem (?P<max>\d+)"
    r"|flush (?P<fset>\S+)"
    r"|add (?P<aset>\S+) (?P<net>[0-9a-f.:/]+) timeout (?P<timeout>\d+)"
)
NFT_LINE = re.compile(
    r"add table (?P<tfam>\w+) (?P<table>\w+)"
    r"|add set (?P<sfam>\w+) \w+ (?P<set>\w+) \{ type (?P<type>ipv[46]_addr); "
    r"flags interval, timeout; \}"
    r"|flush set \w+ \w+ (?P<fset>\w+)"
    r"|add element \w+ \w+ (?P<eset>\w+) \{ (?P<elements>[^{}]+) \}"
)
NFT_ELEMENT = re.compile(r"(?P<net>[0-9a-f.:/]+)(?: timeout (?P<timeout>[1-9]\d*)s)?")


def entries(*spec: tuple[str, float | None]) -> list[BlockEntry]:
    return [BlockEntry(net, "r", "finding", T0, exp) for net, exp in spec]


SAMPLE = entries(
    ("192.0.2.1", T0 + 300.2),
    ("10.0.0.0/8", None),
    ("10.1.2.3", T0 + 50),  # inside 10.0.0.0/8
    ("2001:db8::/32", T0 + 10**9),
    ("198.51.100.9", T0 - 1),  # already ended
)


def parse_ipset(text: str) -> dict[str, dict[str, int]]:
    sets: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        match = IPSET_LINE.fullmatch(line)
        assert match, line
        if match["cset"]:
            assert len(match["cset"]) <= 31
            sets[match["cset"]] = {}
        elif match["fset"]:
            assert match["fset"] in sets and not sets[match["fset"]]
        else:
            network = ipaddress.ip_network(match["net"])
            family = 6 if match["aset"].endswith("-v6") else 4
            assert network.version == family, line
            timeout = int(match["timeout"])
            assert 0 <= timeout <= IPSET_MAX_TIMEOUT_S
            sets[match["aset"]][match["net"]] = timeout
    return sets


def parse_nft(text: str) -> dict[str, dict[str, int | None]]:
    sets: dict[str, dict[str, int | None]] = {}
    lines = text.splitlines()
    assert NFT_LINE.fullmatch(lines[0]) and lines[0].startswith("add table")
    for line in lines[1:]:
        match = NFT_LINE.fullmatch(line)
        assert match, line
        if match["set"]:
            assert match["type"] == ("ipv6_addr" if match["set"].endswith("_v6") else "ipv4_addr")
            sets[match["set"]] = {}
        elif match["eset"]:
            for element in match["elements"].split(", "):
                item = NFT_ELEMENT.fullmatch(element)
                assert item, element
                ipaddress.ip_network(item["net"])
                sets[match["eset"]][item["net"]] = int(item["timeout"]) if item["timeout"] else None
    return sets


def test_plain_is_one_live_network_per_line() -> None:
    assert to_plain(SAMPLE, T0) == "10.0.0.0/8\n10.1.2.3\n192.0.2.1\n2001:db8::/32\n"
    assert to_plain([], T0) == ""


def test_ipset_script() -> None:
    text = to_ipset(SAMPLE, T0, "voip_ban")
    assert text.splitlines()[0] == (
        "create voip_ban-v4 hash:net family inet timeout 0 maxelem 65536"
    )
    assert parse_ipset(text) == {
        "voip_ban-v4": {"10.0.0.0/8": 0, "10.1.2.3": 50, "192.0.2.1": 301},
        "voip_ban-v6": {"2001:db8::/32": IPSET_MAX_TIMEOUT_S},
    }


def test_nftables_script_leaves_nested_networks_out() -> None:
    text = to_nftables(SAMPLE, T0)
    assert "add set inet filter sipwarden_v4 { type ipv4_addr; flags interval, timeout; }" in text
    assert parse_nft(text) == {
        "sipwarden_v4": {"10.0.0.0/8": None, "192.0.2.1": 301},
        "sipwarden_v6": {"2001:db8::/32": 10**9},
    }


def test_empty_nftables_sets_have_no_element_line() -> None:
    text = to_nftables([], T0, "bl", "ip6 sipwarden")
    assert "add element" not in text and "flush set ip6 sipwarden bl_v6" in text
    assert parse_nft(text) == {"bl_v4": {}, "bl_v6": {}}


@pytest.mark.parametrize("name", ["", "a b", "x;y", "n" * 40, "set\nflush"])
def test_bad_set_names_are_refused(name: str) -> None:
    with pytest.raises(InputError):
        to_ipset(SAMPLE, T0, name)
    with pytest.raises(InputError):
        to_nftables(SAMPLE, T0, name)


def test_bad_nft_table_is_refused() -> None:
    with pytest.raises(InputError):
        to_nftables(SAMPLE, T0, table="inet filter; flush ruleset")


def test_large_ipset_raises_maxelem() -> None:
    many = [
        BlockEntry(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", "r", "cli", T0, None)
        for i in range(70_000)
    ]
    first = to_ipset(many, T0).splitlines()[0]
    assert first.endswith("maxelem 70000")


@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.ip_addresses(v=4).map(str),
                st.ip_addresses(v=6).map(str),
                st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=4), st.integers(1, 32)),
                st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=6), st.integers(1, 128)),
            ),
            st.one_of(st.none(), st.floats(1, 10**8)),
        ),
        max_size=30,
    )
)
def test_every_export_parses_and_covers_the_store(spec: list[tuple[str, float | None]]) -> None:
    store = MemoryBlocklistStore()
    for network, ttl in spec:
        store.add(network, T0, ttl_s=ttl, reason="r", origin="finding")
    live = store.list(T0)
    plain = to_plain(live, T0).splitlines()
    assert plain == [e.network for e in live]
    ipset = parse_ipset(to_ipset(live, T0))
    assert sorted([*ipset["sipwarden-v4"], *ipset["sipwarden-v6"]]) == sorted(plain)
    nft = parse_nft(to_nftables(live, T0))
    exported = [ipaddress.ip_network(n) for s in nft.values() for n in s]
    for entry in live:  # every ban is enforced by itself or by a network containing it
        banned = ipaddress.ip_network(entry.network)
        assert any(
            banned.version == other.version and banned.subnet_of(other)  # type: ignore[arg-type]
            for other in exported
        )
    for a in exported:  # and no two elements of one interval set overlap
        assert sum(a.overlaps(b) for b in exported if a.version == b.version) == 1
