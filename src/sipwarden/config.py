"""The sipwarden TOML configuration file: read, validated, turned into engine and detector
configs. This module does I/O (it reads the file and the lists it names); the core objects only
ever receive the validated config objects.

Layout (``examples/sipwarden.toml`` is a commented example)::

    [engine]                    EngineConfig fields (episode_gap_s, max_open_episodes, ...)
    [engine.tracker]            TrackerConfig fields
    [detectors."<id>"]          that detector's Config fields (enabled, allow_sources, ...)
    [exchange]  sender_id       the FS.38 ``sender_id`` of the events this operator writes
    [events]    min_severity    findings at or above it become FS.38 events
    [gateway]                   ``sipwarden gateway``: listen, upstream, fail_open, allow_public,
                                blocklist_db, metrics, secret_file, workers, tls_cert, tls_key,
                                upstream_ca, upstream_server_name (flags override them)
    [gateway.policy]            gateway.policy.PolicyConfig fields (trusted_peers, ...)
    [gateway.sanitize]          gateway.sanitize.SanitizeConfig fields
    [gateway.streams]           StreamsConfig: bounds of the TCP/TLS side

A list field ``X`` (``tuple[str, ...]``) may instead, or also, be given as ``X_file``: a path
relative to the config file, one entry per line, ``#`` starts a comment, blank lines skipped.
File entries follow the inline ones.

Every error is a :class:`ConfigFileError` naming the file and the key path in TOML spelling,
``sipwarden.toml: detectors."tdos.request_flood".window_s: Input should be greater than 0``;
an entry read from an ``X_file`` is named by that file and line.

The config and its list files must be regular files of bounded size (:data:`MAX_CONFIG_BYTES`,
:data:`MAX_LIST_FILE_BYTES`): a path to ``/dev/zero`` or a FIFO is an error, not a hang. An
``X_file`` may name any readable file (operators keep shared lists elsewhere, e.g. under /etc);
error messages quote at most :data:`_MAX_DETAIL` characters of a bad entry, control characters
escaped, so a wrong path to a binary or huge file gives one readable line.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import stat
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sipwarden.detect import DETECTORS, Detector, DetectorConfig, EngineConfig, Severity
from sipwarden.errors import ConfigError, SipwardenError
from sipwarden.gateway.policy import PolicyConfig
from sipwarden.gateway.sanitize import SanitizeConfig

__all__ = [
    "DEFAULT_SENDER_ID",
    "MAX_CONFIG_BYTES",
    "MAX_LIST_FILE_BYTES",
    "MAX_WORKERS",
    "ConfigFileError",
    "EventsConfig",
    "ExchangeConfig",
    "GatewayConfig",
    "Settings",
    "StreamsConfig",
    "load_settings",
    "parse_settings",
    "private_file_problem",
    "read_secret_file",
]

#: Used until an operator names itself. It matches the FS.38 1.0 ``sender_id`` pattern
#: (exchange-stir-diameter.md §A.1) so events validate, and says plainly that nobody set it -
#: a receiver seeing it knows the sender skipped configuration.
DEFAULT_SENDER_ID = "unconfigured"

#: A config file is a few kilobytes; anything near this is a wrong path.
MAX_CONFIG_BYTES = 1 << 20
#: Room for operator lists such as a full IRSF range list (hundreds of thousands of prefixes,
#: a few MB) with a wide margin.
MAX_LIST_FILE_BYTES = 64 << 20
_MAX_DETAIL = 300
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")

_SENDER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_SECTIONS = ("engine", "detectors", "exchange", "events", "gateway")
#: The branch secret is a key, not text: 32 bytes is the BLAKE2b-256 key size the proxy uses;
#: anything much larger than a key is a wrong path.
MIN_SECRET_BYTES = 32
MAX_SECRET_BYTES = 4096
#: Most ``--workers``: one process per core is the useful most (each worker is one asyncio
#: loop, single-threaded); 64 covers the largest single hosts a SIP edge runs on and bounds the
#: processes, sockets and memory a typo can ask for.
MAX_WORKERS = 64
#: A server name as sent in SNI and checked against a certificate (RFC 1035 §2.3.4: 253
#: characters of letters, digits, '-' and '.'); an IP literal also fits.
_SERVER_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")


class ConfigFileError(ConfigError):
    """A config file that does not read or validate: ``file``, the TOML key path ``key``
    (empty for file-level problems) and ``detail``."""

    def __init__(self, file: str, key: str, detail: str) -> None:
        detail = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", detail)
        if len(detail) > _MAX_DETAIL:
            detail = detail[:_MAX_DETAIL] + "…"
        super().__init__(key, detail)
        self.file = file
        self.args = (f"{file}: {key}: {detail}" if key else f"{file}: {detail}",)


class ExchangeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sender_id: str = Field(
        DEFAULT_SENDER_ID,
        description=(
            "This operator's id in FS.38 events (lower-case letters, digits, '-', 2-63 chars, "
            "the schema 1.0 pattern). Default 'unconfigured': no published anchor - a value "
            "that validates and that no real operator would choose."
        ),
    )

    @field_validator("sender_id")
    @classmethod
    def _sender_id_pattern(cls, value: str) -> str:
        if not _SENDER_ID.match(value):
            raise ValueError("must be 2-63 of a-z, 0-9 and '-', starting with a letter or digit")
        return value


class EventsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_severity: Severity = Field(
        Severity.MEDIUM,
        description=(
            "Findings at or above this severity become FS.38 events. Default medium: benign "
            "traffic never reaches medium (conventions), so peers receive only what an operator "
            "would act on; no published anchor."
        ),
    )


def _check_listen(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    from sipwarden.gateway.server import parse_address  # noqa: PLC0415 - asyncio only when used

    for text in value or ():
        try:
            parse_address(text)
        except SipwardenError as exc:
            raise ValueError(str(exc)) from None
    if value is not None and len(set(value)) != len(value):
        raise ValueError("the same address is given twice")
    return value


class StreamsConfig(BaseModel):
    """``[gateway.streams]``: bounds of the TCP/TLS side (``tcp:`` / ``tls:`` addresses). An
    attacker opens connections for free, so each is capped; the defaults are
    :class:`sipwarden.gateway.server.StreamOptions` (a test holds them equal)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    idle_timeout_s: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description=(
            "Close a connection idle this long, seconds. Kamailio's tcp_connection_lifetime is "
            "120 s; ours is longer because RFC 5626 §4.4.1 clients send keep-alives every "
            "95-120 s, so a flow that keeps itself alive stays open. At most a day."
        ),
    )
    max_connections: int = Field(
        2048,
        ge=1,
        le=1_048_576,
        description=(
            "Most concurrent connections from the untrusted side, per worker; above it new "
            "ones are closed at once and counted. Default as Kamailio tcp_max_connections "
            "(2048); at most 2^20, Linux's default fs.nr_open (each connection is a file "
            "descriptor)."
        ),
    )
    max_connections_per_source: int = Field(
        64,
        ge=1,
        le=1_048_576,
        description=(
            "Most concurrent connections from one source IP, per worker: one attacker must "
            "not take every slot, while a NAT sharing one IP among many phones still fits. "
            "Default 64: no published anchor (Kamailio has no per-IP cap in core; pike limits "
            "requests, not connections). Above max_connections it never applies."
        ),
    )
    handshake_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description=(
            "A TLS handshake (and the first byte on a TCP connection) must complete within "
            "this, seconds; slow handshakes are how one host holds many connections. Default "
            "5 s: no published anchor; a handshake on a sane network takes a few round trips, "
            "well under a second."
        ),
    )


class GatewayConfig(BaseModel):
    """The ``[gateway]`` section. A scalar left out (None) means "as the command line says"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: tuple[str, ...] | None = Field(
        None,
        min_length=1,
        description=(
            "Untrusted-side addresses, udp|tcp|tls:IP:PORT or udp|tcp|tls:[IPv6]:PORT; --listen "
            "replaces them. No default: where to listen is the operator's decision."
        ),
    )
    upstream: str | None = Field(
        None,
        description=(
            "The protected SBC/core, udp|tcp|tls:IP:PORT; --upstream replaces it. No default."
        ),
    )
    fail_open: bool | None = Field(
        None,
        description=(
            "Forward when the engine raises; --fail-open/--no-fail-open override. Unset: "
            "false (a firewall that fails open is bypassed by whoever finds the crashing input)."
        ),
    )
    allow_public: bool | None = Field(
        None,
        description=(
            "Allow non-loopback listen/metrics addresses; --allow-public/--no-allow-public "
            "override. Unset: false, exposing the gateway should be a decision."
        ),
    )
    blocklist_db: Path | None = Field(
        None,
        description=(
            "The shared SQLite blocklist (relative to the config file); --blocklist-db "
            "overrides, $SIPWARDEN_DB is used when neither gives one."
        ),
    )
    metrics: str | None = Field(
        None,
        description="Serve Prometheus /metrics on IP:PORT; --metrics overrides. Unset: off.",
    )
    path: Literal["always", "if_supported", "never"] = Field(
        "always",
        description=(
            "When the gateway adds its Path entry to a REGISTER (RFC 3327), so the registrar "
            "routes requests for the binding through it: always (as Kamailio's path module "
            "add_path(); the registrar must accept Path - Kamailio registrar use_path=1 with "
            "path_mode 0 or 1, its strict mode 2 answers 420 to UAs that do not announce "
            "'Supported: path'), if_supported (RFC 3327 §5.2 to the letter: only when the UA "
            "announces it), or never (the core must reach clients some other way). Needs a "
            "restart."
        ),
    )
    secret_file: Path | None = Field(
        None,
        description=(
            "File of at least 32 random bytes keying the Via branch digest and the topology "
            "tokens, shared by every gateway behind one address (relative to the config file; "
            "mode 600). Unset: a random key per start, shared by the --workers of that start; "
            "branches and tokens handed out then do not survive a restart."
        ),
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=MAX_WORKERS,
        description=(
            "Worker processes sharing the listen addresses with SO_REUSEPORT (the kernel "
            "spreads flows by their address 4-tuple, so one client stays on one worker); "
            "--workers overrides. Unset: 1, one process and no supervisor. With more than one, "
            "metrics are served by worker i on the metrics port + i."
        ),
    )
    tls_cert: Path | None = Field(
        None,
        description=(
            "Certificate chain (PEM) presented on tls: listen addresses, relative to the config "
            "file; --tls-cert overrides. Required with a tls: listen address. No default."
        ),
    )
    tls_key: Path | None = Field(
        None,
        description=(
            "Private key (PEM, unencrypted) of tls_cert, relative to the config file; mode 600 "
            "(refused when group or other may read it, as ssh refuses a readable private key); "
            "--tls-key overrides. Required with a tls: listen address."
        ),
    )
    upstream_ca: Path | None = Field(
        None,
        description=(
            "CA bundle (PEM) a tls: upstream's certificate must chain to, relative to the "
            "config file; --upstream-ca overrides. Unset: the system's CAs. The upstream's "
            "certificate is always verified."
        ),
    )
    upstream_server_name: str | None = Field(
        None,
        description=(
            "Name checked against a tls: upstream's certificate and sent as SNI; "
            "--upstream-server-name overrides. Unset: the upstream's IP address."
        ),
    )
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="[gateway.policy]")
    sanitize: SanitizeConfig = Field(
        default_factory=SanitizeConfig, description="[gateway.sanitize]"
    )
    streams: StreamsConfig = Field(default_factory=StreamsConfig, description="[gateway.streams]")

    _listen = field_validator("listen")(_check_listen)

    @field_validator("upstream")
    @classmethod
    def _upstream_address(cls, value: str | None) -> str | None:
        if value is not None:
            _check_listen((value,))
        return value

    @field_validator("upstream_server_name")
    @classmethod
    def _server_name(cls, value: str | None) -> str | None:
        if value is not None and not _SERVER_NAME.match(value):
            raise ValueError("must be a DNS name or IP address (letters, digits, '-', '.', ':')")
        return value

    @field_validator("metrics")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        from sipwarden.observability import parse_metrics_address  # noqa: PLC0415

        if value is not None:
            try:
                parse_metrics_address(value)
            except SipwardenError as exc:
                raise ValueError(str(exc)) from None
        return value


@dataclass(frozen=True)
class Settings:
    """A validated configuration. ``detectors`` holds only the detectors the file configures;
    the others run with their defaults."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    detectors: Mapping[str, DetectorConfig] = field(default_factory=dict)
    exchange: ExchangeConfig = field(default_factory=ExchangeConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    source: str | None = None
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    #: The branch key derived from ``gateway.secret_file`` (None: random per process). Kept out
    #: of repr so a logged Settings never shows it.
    gateway_secret: bytes | None = field(default=None, repr=False)

    def build_detectors(self) -> list[Detector]:
        """Every registered detector, built with its configured (or default) Config."""
        return [
            cls(self.detectors[detector_id]) if detector_id in self.detectors else cls()
            for detector_id, cls in DETECTORS.items()
        ]


def load_settings(path: Path) -> Settings:
    """Read and validate a TOML config file; any problem is a :class:`ConfigFileError`."""
    try:
        raw = _read_regular_file(path, MAX_CONFIG_BYTES)
    except OSError as exc:
        raise ConfigFileError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigFileError(str(path), "", f"not UTF-8 text: {exc.reason}") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already says "(at line L, column C)".
        raise ConfigFileError(str(path), "", f"invalid TOML: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively; no config nests deeply.
        raise ConfigFileError(str(path), "", "invalid TOML: values nested too deeply") from None
    return parse_settings(data, str(path), base_dir=path.parent)


def parse_settings(data: Mapping[str, Any], source: str, base_dir: Path | None = None) -> Settings:
    """Validate already-parsed TOML data. ``source`` names it in errors; ``base_dir`` is where
    ``X_file`` paths are relative to (None: ``X_file`` keys are errors)."""
    for key in data:
        if key not in _SECTIONS:
            raise ConfigFileError(
                source,
                _key_path((key,)),
                f"unknown section; expected one of {', '.join(_SECTIONS)}",
            )
    _reject_non_finite(data, (), source)
    engine = _validate(EngineConfig, _table(data, "engine", source), ("engine",), source)
    exchange = _validate(ExchangeConfig, _table(data, "exchange", source), ("exchange",), source)
    events = _validate(EventsConfig, _table(data, "events", source), ("events",), source)
    detectors: dict[str, DetectorConfig] = {}
    for detector_id, values in _table(data, "detectors", source).items():
        path = ("detectors", detector_id)
        cls = DETECTORS.get(detector_id)
        if cls is None:
            near = difflib.get_close_matches(detector_id, list(DETECTORS), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise ConfigFileError(
                source,
                _key_path(path),
                f"unknown detector id{hint} (see `sipwarden detectors list`)",
            )
        if not isinstance(values, dict):
            raise ConfigFileError(source, _key_path(path), "must be a table of settings")
        expanded, origins = _read_list_files(cls.Config, values, path, source, base_dir)
        detectors[detector_id] = _validate(cls.Config, expanded, path, source, origins)
    gateway, secret = _parse_gateway(_table(data, "gateway", source), source, base_dir)
    return Settings(engine, detectors, exchange, events, source, gateway, secret)


def _parse_gateway(
    values: dict[str, Any], source: str, base_dir: Path | None
) -> tuple[GatewayConfig, bytes | None]:
    """The ``[gateway]`` table: its policy and sanitize sub-tables validated on their own (so
    ``trusted_peers_file`` works as in detector sections), paths made relative to the config
    file, and the secret file read."""
    values = dict(values)
    sections: tuple[tuple[str, type[BaseModel]], ...] = (
        ("policy", PolicyConfig),
        ("sanitize", SanitizeConfig),
        ("streams", StreamsConfig),
    )
    for name, model in sections:
        path = ("gateway", name)
        sub = values.get(name, {})
        if not isinstance(sub, dict):
            raise ConfigFileError(source, _key_path(path), "must be a table")
        expanded, origins = _read_list_files(model, sub, path, source, base_dir)
        # A nested table (policy.per_source) that sets one key keeps the defaults of the others:
        # "rate_per_s = 5" should not demand burst and action too.
        defaults = model()
        for key, given in list(expanded.items()):
            default = getattr(defaults, key, None)
            if isinstance(default, BaseModel) and isinstance(given, dict):
                expanded[key] = {**default.model_dump(), **given}
        values[name] = _validate(model, expanded, path, source, origins)
    gateway = _validate(GatewayConfig, values, ("gateway",), source)
    updates: dict[str, Path] = {}
    for name in ("blocklist_db", "secret_file", "tls_cert", "tls_key", "upstream_ca"):
        relative: Path | None = getattr(gateway, name)
        if relative is not None and base_dir is not None:
            updates[name] = base_dir / relative
    gateway = gateway.model_copy(update=updates)
    secret = None
    if gateway.secret_file is not None:
        secret = read_secret_file(gateway.secret_file, source)
    return gateway, secret


def read_secret_file(path: Path, source: str) -> bytes:
    """The branch key from a secret file: a regular file of 32..4096 bytes that neither group
    nor other may read or write (as ssh refuses a readable private key). The file's bytes are
    hashed to the 32-byte key, so any length of random data keys the digest fully. Errors name
    the file and never its content."""
    key = _key_path(("gateway", "secret_file"))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigFileError(source, key, f"cannot read {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ConfigFileError(source, key, f"{path}: not a regular file")
    with os.fdopen(fd, "rb") as handle:
        problem = private_file_problem(info.st_mode, info.st_uid)
        if problem is not None:
            raise ConfigFileError(source, key, f"{path}: {problem}")
        data = handle.read(MAX_SECRET_BYTES + 1)
    if not MIN_SECRET_BYTES <= len(data) <= MAX_SECRET_BYTES:
        raise ConfigFileError(
            source,
            key,
            f"{path}: must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes of random data "
            f"(e.g. head -c 32 /dev/urandom), not {len(data)}",
        )
    return hashlib.blake2b(data, digest_size=32, person=b"sipwarden-branch").digest()


def private_file_problem(mode: int, owner: int | None = None) -> str | None:
    """Why a file holding a key must not be used with this ``st_mode`` and ``owner`` uid (None:
    it may): group or other may read or write it, or another user owns it. As ssh refuses a
    readable private key: a key others can read is no longer secret, one they can write (or
    own) is no longer ours. Root's files are accepted for any user (a key installed by root)."""
    if mode & 0o066:
        return f"readable or writable by group/other (mode {stat.S_IMODE(mode):03o}); chmod 600 it"
    if owner is not None and owner not in (0, os.geteuid()):
        return f"owned by uid {owner}, not by the user running sipwarden ({os.geteuid()})"
    return None


# -- helpers -----------------------------------------------------------------------------------
M = typing.TypeVar("M", bound=BaseModel)


@dataclass
class _FileEntries:
    """Entries of one field read from an ``X_file``: where each came from, to name the line
    when one does not validate."""

    file: str
    #: index (tuple fields) or key (dict fields) -> (line number, the value as written)
    lines: dict[int | str, tuple[int, Any]] = field(default_factory=dict)


#: field name -> its entries read from a file
_Origins = dict[str, _FileEntries]


def _reject_non_finite(value: Any, path: tuple[str | int, ...], source: str) -> None:
    """TOML has ``inf`` and ``nan``; no window, rate or size means either (an infinite window
    never slides), so both are errors wherever they appear."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigFileError(source, _key_path(path), f"must be a finite number, not {value}")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _reject_non_finite(item, (*path, str(key)), source)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_non_finite(item, (*path, index), source)


def _table(data: Mapping[str, Any], name: str, source: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigFileError(source, _key_path((name,)), "must be a table")
    return value


def _validate(
    model: type[M],
    values: Mapping[str, Any],
    path: tuple[str, ...],
    source: str,
    origins: _Origins | None = None,
) -> M:
    try:
        return model(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        message = error["msg"]
        entries = origins.get(str(loc[0])) if origins and loc else None
        if entries is not None:
            _raise_for_file_line(model, str(loc[0]), loc, message, entries, path)
        raise ConfigFileError(source, _key_path((*path, *loc)), message) from None


def _raise_for_file_line(
    model: type[BaseModel],
    name: str,
    loc: tuple[Any, ...],
    message: str,
    entries: _FileEntries,
    path: tuple[str, ...],
) -> None:
    """Name the file and line of the entry that failed. Item errors carry its index or key;
    a whole-field validator's error does not, so each file entry is validated alone until the
    bad one shows (only on the error path)."""
    key_path = _key_path((*path, f"{name}_file"))
    if len(loc) >= 2 and loc[1] in entries.lines:
        line = entries.lines[loc[1]][0]
        raise ConfigFileError(f"{entries.file}:{line}", key_path, message)
    is_dict = _is_str_dict(model.model_fields[name].annotation)
    for item, (line, value) in entries.lines.items():
        single = {item: value} if is_dict else (value,)
        try:
            model.model_validate({name: single})
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["loc"] and first["loc"][0] == name:
                raise ConfigFileError(f"{entries.file}:{line}", key_path, first["msg"]) from None


def _is_str_tuple(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple and typing.get_args(annotation) == (str, ...)


def _is_str_dict(annotation: Any) -> bool:
    return typing.get_origin(annotation) is dict and typing.get_args(annotation) == (str, str)


def _read_list_files(
    model: type[BaseModel],
    values: dict[str, Any],
    path: tuple[str, ...],
    source: str,
    base_dir: Path | None,
) -> tuple[dict[str, Any], _Origins]:
    """Replace each ``X_file`` key by the file's entries: for a ``tuple[str, ...]`` field one
    entry per line, after any inline ``X`` entries; for a ``dict[str, str]`` field one
    ``KEY [VALUE]`` per line (first whitespace splits; inline keys win). Other ``*_file`` keys
    are left for pydantic to reject as unknown."""
    result = dict(values)
    origins: _Origins = {}
    for key, value in values.items():
        name = key.removesuffix("_file")
        info = model.model_fields.get(name)
        if name == key or info is None:
            continue
        is_tuple, is_dict = _is_str_tuple(info.annotation), _is_str_dict(info.annotation)
        if not (is_tuple or is_dict):
            continue
        key_path = _key_path((*path, key))
        if not isinstance(value, str):
            raise ConfigFileError(source, key_path, "must be a file name (string)")
        if base_dir is None:
            raise ConfigFileError(source, key_path, "needs a config file to be relative to")
        list_path = base_dir / value
        try:
            text = _read_regular_file(list_path, MAX_LIST_FILE_BYTES).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigFileError(source, key_path, f"cannot read {list_path}: {why}") from None
        inline = result.get(name, {} if is_dict else ())
        entries = _FileEntries(str(list_path))
        if is_dict:
            if not isinstance(inline, dict):
                raise ConfigFileError(source, _key_path((*path, name)), "must be a table")
            table = dict(inline)
            for number, entry in _file_lines(text):
                item, _, label = entry.partition(" ")
                item, _, tab_label = item.partition("\t")
                label = (tab_label + " " + label).strip()
                if item not in table:
                    table[item] = label
                    entries.lines[item] = (number, label)
            result[name] = table
        else:
            if not isinstance(inline, Sequence) or isinstance(inline, str):
                raise ConfigFileError(source, _key_path((*path, name)), "must be a list")
            items = list(inline)
            for number, entry in _file_lines(text):
                entries.lines[len(items)] = (number, entry)
                items.append(entry)
            result[name] = tuple(items)
        origins[name] = entries
        del result[key]
    return result, origins


def _read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; otherwise OSError with a
    ``strerror`` saying why (checked on the open file, so a swap after the check is seen).
    Opened non-blocking: opening a FIFO would otherwise wait for a writer."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a device, FIFO or socket"
            raise OSError(0, f"not a regular file ({kind})")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(0, f"larger than {limit} bytes")
    return data


def _file_lines(text: str) -> list[tuple[int, str]]:
    """(line number, entry) for each line with content; ``#`` starts a comment."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            found.append((number, entry))
    return found


def _key_path(parts: Sequence[str | int]) -> str:
    """TOML spelling of a key path: bare keys plain, others quoted, list indexes as ``[i]``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        piece = part if _BARE_KEY.match(part) else '"' + part.replace('"', '\\"') + '"'
        text += f".{piece}" if text else piece
    return text
