"""The ``[gateway]`` config section: it drives the policy and sanitizing, command-line flags win
over it, every error names the file and key, and the shared branch key file is checked."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sipwarden.cli.gateway import GatewayFlags, GatewayPlan, _first, check_tls_files
from sipwarden.config import (
    ConfigFileError,
    Settings,
    StreamsConfig,
    load_settings,
    parse_settings,
)
from sipwarden.detect import Engine
from sipwarden.errors import InputError
from sipwarden.gateway.enforcer import Enforcer
from sipwarden.gateway.policy import Policy, PolicyConfig
from sipwarden.gateway.proxy import ProxyConfig, StatelessProxy
from sipwarden.gateway.sanitize import Sanitizer
from sipwarden.gateway.server import StreamOptions, parse_address
from sipwarden.net import Endpoint
from sipwarden.sip import Request, Response, parse_message
from tests.conftest import REPO
from tests.gateway import run_cli
from tests.tls import make_test_certificate

LISTEN = Endpoint("127.0.0.1", 5060)
UPSTREAM = Endpoint("127.0.0.1", 5070)
CLIENT = Endpoint("192.0.2.10", 5062)
NOW = 1_700_000_000.0


def write(tmp_path: Path, text: str, name: str = "sipwarden.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigFileError) as info:
        load_settings(path)
    return str(info.value)


def secret(tmp_path: Path, data: bytes, mode: int = 0o600, name: str = "branch.key") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(mode)
    return path


def proxy_for(settings: Settings) -> StatelessProxy:
    """What `sipwarden gateway` builds from the settings, without sockets."""
    config = ProxyConfig(
        listen=(LISTEN,),
        upstream=UPSTREAM,
        upstream_local=Endpoint("127.0.0.1", 40000),
        secret=settings.gateway_secret or b"k" * 32,
    )
    return StatelessProxy(
        config,
        Engine(settings.build_detectors(), settings.engine),
        Enforcer(Policy(settings.gateway.policy)),
        Sanitizer(settings.gateway.sanitize).outgoing,
    )


def options(method: str = "OPTIONS") -> bytes:
    """A phone's request: the headers a response does not copy keep the 405 smaller than it
    (the proxy never answers with more bytes than it received)."""
    return (
        f"{method} sip:alice@example.net SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKgc1;rport\r\nMax-Forwards: 70\r\n"
        "From: <sip:bob@example.net>;tag=f1\r\nTo: <sip:alice@example.net>\r\n"
        f"Call-ID: gc1@192.0.2.10\r\nCSeq: 1 {method}\r\n"
        "Contact: <sip:bob@192.0.2.10:5062>\r\nUser-Agent: Softphone 1.0\r\n"
        "Accept: application/sdp\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


# -- the file drives the gateway ---------------------------------------------------------------


def test_empty_gateway_section_is_the_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[gateway]\n"))
    gw = settings.gateway
    assert gw.policy == PolicyConfig() and gw.listen is None and gw.upstream is None
    assert (gw.fail_open, gw.allow_public, gw.metrics, gw.secret_file) == (None,) * 4
    assert settings.gateway_secret is None


def test_method_removed_from_the_allow_list_gets_405(tmp_path: Path) -> None:
    default = proxy_for(Settings())
    [send] = default.on_datagram(options(), CLIENT, LISTEN, NOW)
    assert send.dest == UPSTREAM

    path = write(tmp_path, '[gateway.policy]\nallowed_methods = ["INVITE", "ACK", "BYE"]\n')
    proxy = proxy_for(load_settings(path))
    [send] = proxy.on_datagram(options(), CLIENT, LISTEN, NOW)
    response = parse_message(send.data)
    assert send.dest == CLIENT and isinstance(response, Response) and response.status == 405
    assert "INVITE" in (response.headers.get("allow") or "")


def test_sanitize_section_reaches_the_sanitizer(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway.sanitize]\nproduct_mode = "remove"\nstrip_headers = []\n')
    settings = load_settings(path)
    assert settings.gateway.sanitize.product_mode == "remove"
    assert settings.gateway.sanitize.strip_headers == ()


def test_nested_rate_limit_table_keeps_unset_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "[gateway.policy.per_source]\nrate_per_s = 5\n")
    per_source = load_settings(path).gateway.policy.per_source
    default = PolicyConfig().per_source
    assert per_source.rate_per_s == 5
    assert (per_source.burst, per_source.action) == (default.burst, default.action)


def test_trusted_peers_stay_out_of_detector_allow_lists(tmp_path: Path) -> None:
    """A spoofed trusted source must still produce injection/malformed findings."""
    path = write(tmp_path, '[gateway.policy]\ntrusted_peers = ["192.0.2.0/28"]\n')
    settings = load_settings(path)
    assert settings.gateway.policy.trusted_peers == ("192.0.2.0/28",)
    for detector in settings.build_detectors():
        assert "192.0.2.0/28" not in getattr(detector.config, "allow_sources", ())


def test_trusted_peers_file_is_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "peers.txt").write_text("# trunks\n192.0.2.1\n\n198.51.100.0/24\n")
    path = write(tmp_path, '[gateway.policy]\ntrusted_peers_file = "peers.txt"\n')
    assert load_settings(path).gateway.policy.trusted_peers == ("192.0.2.1", "198.51.100.0/24")


def test_scalars_and_paths_relative_to_the_config_file(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    secret(sub, os.urandom(32))
    path = write(
        sub,
        """
[gateway]
listen = ["udp:127.0.0.1:5060", "udp:[::1]:5060"]
upstream = "udp:127.0.0.1:5070"
fail_open = true
allow_public = false
blocklist_db = "bl.sqlite"
metrics = "127.0.0.1:9464"
secret_file = "branch.key"
""",
    )
    gw = load_settings(path).gateway
    assert gw.listen == ("udp:127.0.0.1:5060", "udp:[::1]:5060")
    assert gw.upstream == "udp:127.0.0.1:5070" and gw.metrics == "127.0.0.1:9464"
    assert (gw.fail_open, gw.allow_public) == (True, False)
    assert gw.blocklist_db == sub / "bl.sqlite" and gw.secret_file == sub / "branch.key"


def test_commented_example_section_loads_when_uncommented(tmp_path: Path) -> None:
    text = (REPO / "examples" / "sipwarden.toml").read_text()
    block = text[text.index("# [gateway]\n") :]
    lines = [line[2:] if line.startswith("# ") else "" for line in block.splitlines()]
    secret(tmp_path, os.urandom(32))
    settings = load_settings(write(tmp_path, "\n".join(lines) + "\n"))
    assert settings.gateway.policy.trusted_peers == ("192.0.2.0/28",)
    assert settings.gateway.upstream == "udp:192.0.2.10:5060"
    assert settings.gateway_secret is not None


# -- errors name the file and the key ----------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key", "detail"),
    [
        ("gateway = 1", "gateway", "must be a table"),
        ("[gateway]\nbogus = 1", "gateway.bogus", "Extra inputs"),
        ("[gateway]\npolicy = 1", "gateway.policy", "must be a table"),
        ("[gateway]\nlisten = []", "gateway.listen", "at least 1"),
        ('[gateway]\nlisten = ["udp:127.0.0.1"]', "gateway.listen", "udp:127.0.0.1"),
        (
            '[gateway]\nlisten = ["udp:127.0.0.1:1", "udp:127.0.0.1:1"]',
            "gateway.listen",
            "twice",
        ),
        ('[gateway]\nupstream = "sctp:127.0.0.1:5070"', "gateway.upstream", "tls:IP:PORT"),
        ('[gateway]\nmetrics = "nowhere"', "gateway.metrics", "IP:PORT"),
        ('[gateway]\nfail_open = "maybe"', "gateway.fail_open", "boolean"),
        ("[gateway.policy]\nmax_body_bytes = -1", "gateway.policy.max_body_bytes", "greater"),
        (
            "[gateway.policy.per_source]\nrate_per_s = 0",
            "gateway.policy.per_source.rate_per_s",
            "Input should be greater than 0",
        ),
        ('[gateway.policy]\ntrusted_peers = ["x"]', "gateway.policy.trusted_peers", "'x'"),
        ("[gateway.policy]\nnope = 1", "gateway.policy.nope", "Extra inputs"),
        ('[gateway.sanitize]\nproduct_mode = "x"', "gateway.sanitize.product_mode", "keep"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path: Path, toml: str, key: str, detail: str) -> None:
    path = write(tmp_path, toml + "\n")
    message = error_of(path)
    assert message.startswith(f"{path}: {key}: "), message
    assert detail in message


def test_trusted_peers_file_error_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "peers.txt").write_text("192.0.2.1\nnot-an-ip\n")
    path = write(tmp_path, '[gateway.policy]\ntrusted_peers_file = "peers.txt"\n')
    message = error_of(path)
    assert message.startswith(f"{tmp_path / 'peers.txt'}:2: gateway.policy.trusted_peers_file: ")


# -- the shared branch key ---------------------------------------------------------------------


def test_secret_file_keys_the_branch_the_same_for_every_worker(tmp_path: Path) -> None:
    key = secret(tmp_path, b"0123456789abcdef" * 4)
    path = write(tmp_path, '[gateway]\nsecret_file = "branch.key"\n')
    first, second = load_settings(path), load_settings(path)
    assert first.gateway_secret is not None and len(first.gateway_secret) == 32
    assert first.gateway_secret == second.gateway_secret
    assert key.read_bytes() not in first.gateway_secret
    assert "0123456789abcdef" not in repr(first) and repr(first.gateway_secret) not in repr(first)
    secret(tmp_path, b"another key of thirty-two bytes!")
    assert load_settings(path).gateway_secret != first.gateway_secret


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644])
def test_secret_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    secret(tmp_path, b"s3cr3t-content-" * 4, mode)
    path = write(tmp_path, '[gateway]\nsecret_file = "branch.key"\n')
    message = error_of(path)
    assert message.startswith(f"{path}: gateway.secret_file: {tmp_path / 'branch.key'}: ")
    assert "group/other" in message and "s3cr3t" not in message


def test_secret_file_too_short_missing_or_not_regular(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway]\nsecret_file = "branch.key"\n')
    assert "cannot read" in error_of(path) and "branch.key" in error_of(path)
    secret(tmp_path, b"short-secret")
    message = error_of(path)
    assert "32 to 4096 bytes" in message and "short-secret" not in message
    (tmp_path / "branch.key").unlink()
    (tmp_path / "branch.key").mkdir()
    assert "not a regular file" in error_of(path)


def test_secret_file_without_a_config_dir_is_used_as_given(tmp_path: Path) -> None:
    key = secret(tmp_path, os.urandom(48))
    settings = parse_settings({"gateway": {"secret_file": str(key)}}, "inline")
    assert settings.gateway_secret is not None and len(settings.gateway_secret) == 32


# -- the command line: flags over the file -----------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "file", "expected"),
    [(None, None, False), (None, True, True), (False, True, False), (True, False, True)],
)
def test_a_flag_wins_over_the_file(flag: bool | None, file: bool | None, expected: bool) -> None:
    assert _first(flag, file, default=False) is expected


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_cli_takes_addresses_from_the_file_and_flags_replace_them(tmp_path: Path) -> None:
    file_port, flag_port = free_port(), free_port()
    path = write(
        tmp_path,
        f'[gateway]\nlisten = ["udp:127.0.0.1:{file_port}"]\nupstream = "udp:127.0.0.1:5070"\n',
    )
    result = run_cli("--config", str(path), "--duration", "0.2")
    assert result.returncode == 0, result.stderr
    assert f"listening on udp:127.0.0.1:{file_port}; upstream udp:127.0.0.1:5070" in result.stderr
    result = run_cli(
        "--config", str(path), "--listen", f"udp:127.0.0.1:{flag_port}",
        "--upstream", "udp:127.0.0.1:5071", "--duration", "0.2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"listening on udp:127.0.0.1:{flag_port}; upstream udp:127.0.0.1:5071" in result.stderr


def test_cli_allow_public_from_the_file_and_no_flag_overrides_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[gateway]\nlisten = ["udp:192.0.2.1:5060"]\nupstream = "udp:127.0.0.1:5070"\n'
        "allow_public = true\n",
    )
    result = run_cli("--config", str(path), "--no-allow-public", "--duration", "0.2")
    assert result.returncode == 2 and "add --allow-public" in result.stderr
    result = run_cli("--config", str(path), "--duration", "0.2")
    # Past the allow-public check; 192.0.2.1 (RFC 5737) is not an address of this host.
    assert "add --allow-public" not in result.stderr


@pytest.mark.parametrize(
    ("toml", "args", "missing"),
    [
        ("", [], "--listen"),
        ('[gateway]\nlisten = ["udp:127.0.0.1:5060"]\n', [], "--upstream"),
        ("", ["--listen", "udp:127.0.0.1:5060"], "--upstream"),
        ('[gateway]\nupstream = "udp:127.0.0.1:5070"\n', [], "--listen"),
    ],
)
def test_cli_without_listen_or_upstream_names_both_ways(
    tmp_path: Path, toml: str, args: list[str], missing: str
) -> None:
    path = write(tmp_path, toml)
    result = run_cli("--config", str(path), *args, "--duration", "0.2")
    assert result.returncode == 2
    key = "gateway.listen" if missing == "--listen" else "gateway.upstream"
    assert result.stderr.startswith(f"error: {missing}: ") and key in result.stderr


def test_cli_config_error_names_the_key_and_never_prints_the_secret(tmp_path: Path) -> None:
    secret(tmp_path, b"TOPSECRET-" * 4, 0o644)
    path = write(tmp_path, '[gateway]\nsecret_file = "branch.key"\n')
    result = run_cli("--config", str(path), "--duration", "0.2")
    assert result.returncode == 2
    assert f"{path}: gateway.secret_file: " in result.stderr
    assert "TOPSECRET" not in result.stderr + result.stdout
    secret(tmp_path, b"TOPSECRET-" * 4, 0o600)
    port = free_port()
    result = run_cli(
        "--config", str(path), "--listen", f"udp:127.0.0.1:{port}",
        "--upstream", "udp:127.0.0.1:5070", "--duration", "0.2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "TOPSECRET" not in result.stderr + result.stdout
    assert isinstance(parse_message(options()), Request)


# -- TCP/TLS: files, stream bounds, workers ----------------------------------------------------


def tls_transport_landed() -> bool:
    try:
        parse_address("tls:127.0.0.1:5061")
    except InputError:
        return False
    return True


needs_tls_transport = pytest.mark.skipif(
    not tls_transport_landed(), reason="tcp:/tls: addresses not accepted by gateway/server.py yet"
)


def make_tls_files(
    directory: Path, *, key_mode: int = 0o600, password: bytes | None = None
) -> tuple[Path, Path]:
    """A certificate for gw.test (signed by ``directory/ca.pem``) and its key, as PEM."""
    files = make_test_certificate(
        directory, names=("gw.test",), key_mode=key_mode, password=password
    )
    return files.cert, files.key


def tls_plan(cert: Path | None, key: Path | None, **extra: Any) -> GatewayPlan:
    flags = GatewayFlags(
        listen=("tls:127.0.0.1:5061",), upstream="udp:127.0.0.1:5070", tls_cert=cert,
        tls_key=key, **extra,
    )  # fmt: skip
    return GatewayPlan.resolve(flags, Settings())


def test_tls_and_stream_keys_load_relative_to_the_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[gateway]
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"
upstream_ca = "/etc/ssl/ca.pem"
upstream_server_name = "sbc.example.net"
workers = 4

[gateway.streams]
idle_timeout_s = 120
max_connections = 100
""",
    )
    gw = load_settings(path).gateway
    assert gw.tls_cert == tmp_path / "tls" / "cert.pem" and gw.tls_key == tmp_path / "tls/key.pem"
    assert gw.upstream_ca == Path("/etc/ssl/ca.pem")  # absolute stays absolute
    assert gw.upstream_server_name == "sbc.example.net" and gw.workers == 4
    assert (gw.streams.idle_timeout_s, gw.streams.max_connections) == (120, 100)
    # Keys left out keep their defaults, which are the server's own.
    assert gw.streams.handshake_timeout_s == StreamOptions().handshake_timeout_s
    assert gw.streams.max_connections_per_source == StreamOptions().max_connections_per_source
    default = StreamsConfig()
    assert (default.idle_timeout_s, default.max_connections) == (
        StreamOptions().idle_timeout_s,
        StreamOptions().max_connections,
    )


def test_flags_win_over_the_tls_keys(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway]\ntls_cert = "a.pem"\nupstream_server_name = "x.example"\n')
    flags = GatewayFlags(
        listen=("udp:127.0.0.1:5060",), upstream="udp:127.0.0.1:5070",
        tls_cert=Path("b.pem"), workers=3,
    )  # fmt: skip
    plan = GatewayPlan.resolve(flags, load_settings(path))
    assert plan.tls.cert == Path("b.pem") and plan.tls.upstream_server_name == "x.example"
    assert plan.workers == 3


@pytest.mark.parametrize(
    ("toml", "key", "detail"),
    [
        ("[gateway.streams]\nidle_timeout_s = 0", "gateway.streams.idle_timeout_s", "greater"),
        ("[gateway.streams]\nidle_timeout_s = 1e9", "gateway.streams.idle_timeout_s", "less"),
        ("[gateway.streams]\nmax_connections = 0", "gateway.streams.max_connections", "greater"),
        (
            "[gateway.streams]\nmax_connections_per_source = 0",
            "gateway.streams.max_connections_per_source",
            "greater",
        ),
        (
            "[gateway.streams]\nhandshake_timeout_s = 301",
            "gateway.streams.handshake_timeout_s",
            "less",
        ),
        ("[gateway.streams]\nidle_s = 1", "gateway.streams.idle_s", "Extra inputs"),
        ("[gateway]\nstreams = 1", "gateway.streams", "must be a table"),
        ("[gateway]\nworkers = 0", "gateway.workers", "greater"),
        ("[gateway]\nworkers = 65", "gateway.workers", "less"),
        ('[gateway]\nupstream_server_name = "a b"', "gateway.upstream_server_name", "DNS name"),
        ("[gateway]\ntls_key = 5", "gateway.tls_key", "path"),
    ],
)
def test_stream_tls_and_worker_errors_name_the_key(
    tmp_path: Path, toml: str, key: str, detail: str
) -> None:
    path = write(tmp_path, toml + "\n")
    message = error_of(path)
    assert message.startswith(f"{path}: {key}: "), message
    assert detail in message


@needs_tls_transport
@pytest.mark.parametrize(
    ("cert", "key", "missing"),
    [
        (None, None, "--tls-cert or gateway.tls_cert"),
        ("c.pem", None, "--tls-key or gateway.tls_key"),
    ],
)
def test_tls_listen_without_certificate_or_key(
    cert: str | None, key: str | None, missing: str
) -> None:
    with pytest.raises(InputError) as info:
        tls_plan(Path(cert) if cert else None, Path(key) if key else None)
    assert info.value.source == "tls:127.0.0.1:5061" and missing in info.value.detail


@needs_tls_transport
def test_good_tls_files_pass(tmp_path: Path) -> None:
    cert, key = make_tls_files(tmp_path)
    check_tls_files(tls_plan(cert, key))
    plan = GatewayPlan.resolve(
        GatewayFlags(
            listen=("udp:127.0.0.1:5060",), upstream="tls:127.0.0.1:5061", upstream_ca=cert,
        ),
        Settings(),
    )  # fmt: skip
    check_tls_files(plan)


@needs_tls_transport
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_tls_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    cert, key = make_tls_files(tmp_path, key_mode=mode)
    with pytest.raises(InputError) as info:
        check_tls_files(tls_plan(cert, key))
    assert info.value.source == str(key)
    assert "group/other" in info.value.detail and "--tls-key" in info.value.detail
    assert "PRIVATE KEY" not in str(info.value)


@needs_tls_transport
def test_bad_tls_files_are_named(tmp_path: Path) -> None:
    cert, key = make_tls_files(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = make_tls_files(other)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    garbage.chmod(0o600)

    def problem(cert_path: Path, key_path: Path) -> InputError:
        with pytest.raises(InputError) as info:
            check_tls_files(tls_plan(cert_path, key_path))
        assert "Traceback" not in str(info.value) and "PRIVATE KEY" not in str(info.value)
        return info.value

    bad = problem(garbage, key)
    assert bad.source == str(garbage) and "not a PEM certificate" in bad.detail
    bad = problem(cert, garbage)
    assert bad.source == str(garbage) and f"not a PEM private key matching {cert}" in bad.detail
    bad = problem(cert, other_key)
    assert bad.source == str(other_key) and "matching" in bad.detail
    bad = problem(tmp_path / "nope.pem", key)
    assert bad.source == str(tmp_path / "nope.pem") and "cannot read" in bad.detail
    bad = problem(cert, other)
    assert bad.source == str(other) and "not a regular file" in bad.detail


@needs_tls_transport
def test_encrypted_tls_key_is_refused_without_a_prompt(tmp_path: Path) -> None:
    cert, key = make_tls_files(tmp_path, password=b"correct horse")
    with pytest.raises(InputError) as info:
        check_tls_files(tls_plan(cert, key))
    assert info.value.source == str(key) and "encrypted private keys" in info.value.detail


@needs_tls_transport
def test_bad_upstream_ca_is_named(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("no certificate here\n")
    plan = GatewayPlan.resolve(
        GatewayFlags(
            listen=("udp:127.0.0.1:5060",), upstream="tls:127.0.0.1:5061", upstream_ca=bundle,
        ),
        Settings(),
    )  # fmt: skip
    with pytest.raises(InputError) as info:
        check_tls_files(plan)
    assert info.value.source == str(bundle) and "--upstream-ca" in info.value.detail


@needs_tls_transport
def test_cli_tls_errors_before_any_socket(tmp_path: Path) -> None:
    port = free_port()
    result = run_cli(
        "--listen", f"tls:127.0.0.1:{port}", "--upstream", "udp:127.0.0.1:5070",
        "--duration", "0.2",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: tls:127.0.0.1:{port}: ")
    assert "--tls-cert or gateway.tls_cert" in result.stderr
    cert, key = make_tls_files(tmp_path, key_mode=0o644)
    result = run_cli(
        "--listen", f"tls:127.0.0.1:{port}", "--upstream", "udp:127.0.0.1:5070",
        "--tls-cert", str(cert), "--tls-key", str(key), "--duration", "0.2",
    )  # fmt: skip
    assert result.returncode == 2 and f"error: {key}: " in result.stderr
    assert "chmod 600" in result.stderr and "listening" not in result.stderr


@needs_tls_transport
def test_cli_tls_listen_to_udp_upstream(tmp_path: Path) -> None:
    """The flags reach the server: a TLS client's OPTIONS comes out as UDP upstream, and the
    listening line names the transport."""
    cert, key = make_tls_files(tmp_path)
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
        upstream.bind(("127.0.0.1", 0))
        upstream.settimeout(5)
        cmd = [
            sys.executable, "-m", "sipwarden", "gateway", "--listen", f"tls:127.0.0.1:{port}",
            "--upstream", f"udp:127.0.0.1:{upstream.getsockname()[1]}",
            "--tls-cert", str(cert), "--tls-key", str(key), "--duration", "20",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert f"listening on tls:127.0.0.1:{port};" in line, line
            context = ssl.create_default_context(cafile=str(cert.parent / "ca.pem"))
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="gw.test") as tls,
            ):
                tls.sendall(options().replace(b"SIP/2.0/UDP", b"SIP/2.0/TLS"))
                data, _ = upstream.recvfrom(65535)
            assert data.startswith(b"OPTIONS sip:alice@example.net SIP/2.0\r\n")
            proc.terminate()
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out)["forwarded_requests"] == 1
