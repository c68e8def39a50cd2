"""The TOML config file: sections, per-detector configs from the registry, X_file lists, and
errors that name the file and the key path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sipwarden.config as config_module
from sipwarden.config import (
    DEFAULT_SENDER_ID,
    ConfigFileError,
    EventsConfig,
    ExchangeConfig,
    Settings,
    load_settings,
    parse_settings,
)
from sipwarden.detect import DETECTORS, DetectorConfig, Engine, Severity
from sipwarden.errors import ConfigError, SipwardenError
from tests.conftest import REPO


def write(tmp_path: Path, text: str, name: str = "sipwarden.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigFileError) as info:
        load_settings(path)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, SipwardenError)
    return str(info.value)


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""))
    assert settings.exchange.sender_id == DEFAULT_SENDER_ID == "unconfigured"
    assert settings.events.min_severity is Severity.MEDIUM
    assert dict(settings.detectors) == {}
    detectors = settings.build_detectors()
    assert [d.id for d in detectors] == list(DETECTORS)
    assert all(d.config == type(d).Config() for d in detectors)


def test_sections_reach_engine_tracker_detectors_exchange_and_events(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[engine]
episode_gap_s = 60
[engine.tracker]
transaction_timeout_s = 10
[exchange]
sender_id = "operator-a"
[events]
min_severity = "high"
[detectors."tdos.request_flood"]
enabled = false
allow_sources = ["192.0.2.0/24"]
""",
    )
    settings = load_settings(path)
    assert settings.engine.episode_gap_s == 60
    assert settings.engine.tracker.transaction_timeout_s == 10
    assert settings.exchange.sender_id == "operator-a"
    assert settings.events.min_severity is Severity.HIGH
    flood = next(d for d in settings.build_detectors() if d.id == "tdos.request_flood")
    assert flood.config.enabled is False and flood.config.allow_sources == ("192.0.2.0/24",)
    engine = Engine(settings.build_detectors(), settings.engine)
    assert "tdos.request_flood" not in {d.id for d in engine.detectors}


def test_every_registered_detector_accepts_its_own_defaults_from_toml() -> None:
    """Generic over the registry: a section that repeats a detector's defaults validates."""
    for detector_id, cls in DETECTORS.items():
        values = cls.Config().model_dump(mode="json")
        settings = parse_settings({"detectors": {detector_id: values}}, "test.toml")
        assert settings.detectors[detector_id] == cls.Config()


def test_bad_value_names_file_and_key_path(tmp_path: Path) -> None:
    path = write(tmp_path, '[detectors."tdos.request_flood"]\nwindow_s = 0\n')
    assert error_of(path) == (
        f'{path}: detectors."tdos.request_flood".window_s: Input should be greater than 0'
    )


def test_unknown_key_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, '[detectors."tdos.request_flood"]\nwindw_s = 2\n')
    message = error_of(path)
    assert 'detectors."tdos.request_flood".windw_s' in message and "Extra inputs" in message
    assert "engine.tracker.bogus" in error_of(write(tmp_path, "[engine.tracker]\nbogus = 1\n"))
    assert error_of(write(tmp_path, "[enginee]\n")).startswith(
        f"{tmp_path / 'sipwarden.toml'}: enginee: unknown section"
    )
    assert "gateway" in error_of(write(tmp_path, "[gatewy]\n"))  # listed among the sections
    assert "gateway.policy.bogus" in error_of(write(tmp_path, "[gateway.policy]\nbogus = 1\n"))


def test_unknown_detector_lists_near_matches(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[detectors."tdos.request_flod"]\nenabled = false\n'))
    assert 'detectors."tdos.request_flod": unknown detector id' in message
    assert "did you mean tdos.request_flood" in message
    assert "did you mean" not in error_of(write(tmp_path, '[detectors."zzz"]\n'))


def test_list_items_are_named_by_index(tmp_path: Path) -> None:
    path = write(tmp_path, '[detectors."tdos.request_flood"]\nallow_sources = ["10.0.0.1", 5]\n')
    assert 'detectors."tdos.request_flood".allow_sources[1]: Input should be' in error_of(path)


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "[engine]\nepisode_gap_s = = 3\n"))
    assert "invalid TOML" in message and "line 2" in message and "column" in message


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    assert "cannot read" in error_of(tmp_path / "missing.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"# caf\xe9\n")
    assert "not UTF-8" in error_of(bad)


def test_sender_id_must_match_the_fs38_pattern(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[exchange]\nsender_id = "Operator A"\n'))
    assert "exchange.sender_id" in message
    assert ExchangeConfig().sender_id == "unconfigured"
    assert "min_severity" in error_of(write(tmp_path, '[events]\nmin_severity = "huge"\n'))


def test_settings_models_document_every_field() -> None:
    for model in (ExchangeConfig, EventsConfig):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"


# -- X_file ----------------------------------------------------------------------------------
def test_list_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "trusted.txt").write_text(
        "# our SBCs\n192.0.2.1\n\n198.51.100.0/24   # NOC\n", encoding="utf-8"
    )
    path = write(
        tmp_path,
        '[detectors."tdos.request_flood"]\nallow_sources = ["203.0.113.9"]\n'
        'allow_sources_file = "lists/trusted.txt"\n',
    )
    config = load_settings(path).detectors["tdos.request_flood"]
    assert config.allow_sources == ("203.0.113.9", "192.0.2.1", "198.51.100.0/24")


def test_bad_line_in_list_file_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "trusted.txt").write_text("192.0.2.1\n# c\nnot-an-ip\n", encoding="utf-8")
    path = write(tmp_path, '[detectors."tdos.request_flood"]\nallow_sources_file = "trusted.txt"\n')
    message = error_of(path)
    assert message.startswith(f"{tmp_path / 'trusted.txt'}:3: ")
    assert "allow_sources_file" in message and "not-an-ip" in message


def test_missing_list_file_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[detectors."tdos.request_flood"]\nallow_sources_file = "nope.txt"\n')
    message = error_of(path)
    assert 'detectors."tdos.request_flood".allow_sources_file: cannot read' in message
    assert "nope.txt" in message


def test_file_key_for_a_field_that_is_not_a_list_is_unknown(tmp_path: Path) -> None:
    path = write(tmp_path, '[detectors."tdos.request_flood"]\nwindow_s_file = "x.txt"\n')
    assert "window_s_file: Extra inputs are not permitted" in error_of(path)


def test_table_file_reads_key_and_label_per_line(tmp_path: Path) -> None:
    """Generic over the registry: any ``dict[str, str]`` field takes ``KEY [VALUE]`` lines."""
    candidates = [
        (detector_id, name)
        for detector_id, cls in DETECTORS.items()
        for name, info in cls.Config.model_fields.items()
        if info.annotation == dict[str, str]
    ]
    if not candidates:
        pytest.skip("no registered detector has a dict[str, str] setting")
    detector_id, name = candidates[0]
    (tmp_path / "table.txt").write_text("+88213 satellite range\n\n+3712\n", encoding="utf-8")
    path = write(tmp_path, f'[detectors."{detector_id}"]\n{name}_file = "table.txt"\n')
    try:
        config = load_settings(path).detectors[detector_id]
    except ConfigFileError as exc:  # a detector may validate keys its own way: then name it
        assert str(exc).startswith(f"{tmp_path / 'table.txt'}:")
        return
    assert getattr(config, name) == {"+88213": "satellite range", "+3712": ""}


def test_x_file_needs_a_config_file_to_be_relative_to() -> None:
    with pytest.raises(ConfigFileError, match="needs a config file"):
        parse_settings({"detectors": {"tdos.request_flood": {"allow_sources_file": "a"}}}, "x")


# -- the bundled example -------------------------------------------------------------------------
def test_example_config_loads() -> None:
    settings = load_settings(REPO / "examples" / "sipwarden.toml")
    assert isinstance(settings, Settings)
    assert settings.exchange.sender_id == "example-operator"
    assert all(isinstance(c, DetectorConfig) for c in settings.detectors.values())


# -- review regressions: files that are not small regular files, hostile entries ---------------
def test_config_that_is_a_device_or_fifo_is_an_error_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "sipwarden.toml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    assert "not a regular file" in error_of(fifo)
    assert "not a regular file" in error_of(Path("/dev/zero"))  # would read forever
    assert str(tmp_path) in error_of(tmp_path)  # a directory


def test_list_file_that_is_a_device_or_too_big_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = '[detectors."recon.scanner_user_agent"]\n'
    path = write(tmp_path, detector + 'allow_sources_file = "/dev/zero"\n')
    message = error_of(path)
    assert "allow_sources_file" in message and "not a regular file" in message
    (tmp_path / "probes.txt").write_text("192.0.2.1\n" * 50)
    monkeypatch.setattr(config_module, "MAX_LIST_FILE_BYTES", 100)
    path = write(tmp_path, detector + 'allow_sources_file = "probes.txt"\n')
    assert "larger than 100 bytes" in error_of(path)


def test_binary_or_huge_entries_give_one_short_readable_line(tmp_path: Path) -> None:
    """A list file that is not a list (a wrong path) is named by file and line; the quoted
    entry is cut and its control characters escaped."""
    (tmp_path / "wrong.txt").write_bytes(b"\x1b[2J" + b"A" * 100_000 + b"\n")
    detector = '[detectors."recon.scanner_user_agent"]\n'
    message = error_of(write(tmp_path, detector + 'allow_sources_file = "wrong.txt"\n'))
    assert "wrong.txt:1" in message and "\x1b" not in message and "\\x1b" in message
    assert len(message) < 500 and message.endswith("…")


def test_deeply_nested_values_are_an_error_not_a_crash(tmp_path: Path) -> None:
    # Regression: tomllib recursed until RecursionError, reported as a sipwarden bug.
    for value in ("[" * 50_000 + "]" * 50_000, "{b=" * 50_000 + "1" + "}" * 50_000):
        assert "nested too deeply" in error_of(write(tmp_path, f"a = {value}\n"))


def test_inf_and_nan_are_errors_naming_the_key(tmp_path: Path) -> None:
    # TOML allows them; an infinite window never slides, so they are refused everywhere.
    cases = {
        "[engine]\nepisode_gap_s = inf\n": "engine.episode_gap_s",
        '[detectors."tdos.request_flood"]\nwindow_s = -inf\n': (
            'detectors."tdos.request_flood".window_s'
        ),
        '[detectors."recon.scanner_user_agent"]\nallow_sources = [nan]\n': (
            'detectors."recon.scanner_user_agent".allow_sources[0]'
        ),
    }
    for text, key in cases.items():
        message = error_of(write(tmp_path, text))
        assert f": {key}: must be a finite number" in message, message
