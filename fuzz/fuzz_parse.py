"""Coverage-guided fuzzing of the SIP core with atheris (libFuzzer for Python).

The contract under test, for any input bytes:

* ``parse_message`` returns a Request or Response, or raises SipParseError - nothing else;
* every typed accessor, ``request_uri`` and ``defects`` raise nothing but SipParseError;
* an accepted message round-trips: ``parse_message(to_bytes(m)) == m``, byte for byte;
* StreamFramer frames the input the same way whether it arrives whole or in two chunks, and
  raises nothing but SipParseError.

Any other exception or a failed assertion is a crash: libFuzzer saves the input and stops.

Run ``make fuzz`` (60 s) or ``.venv/bin/python fuzz/fuzz_parse.py fuzz/seeds -max_total_time=60``.
Inputs libFuzzer finds interesting go to ``fuzz/corpus-work/`` (never into ``fuzz/seeds/``),
crashes to ``fuzz/artifacts/``. Replay one input with ``fuzz/fuzz_parse.py <file>``; without
atheris installed, the given files are replayed in plain Python. See fuzz/README.md.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

try:
    import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]
except ImportError:  # replay mode only
    atheris = None

_instrument = atheris.instrument_imports() if atheris is not None else contextlib.nullcontext()
with _instrument:
    from sipwarden.sip import (
        NEED_DATA,
        Request,
        Response,
        SipParseError,
        StreamFramer,
        parse_message,
        to_bytes,
    )
    from sipwarden.sip.message import TYPED_ACCESSORS

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "seeds"
WORK = HERE / "corpus-work"
ARTIFACTS = HERE / "artifacts"

ACCESSORS = TYPED_ACCESSORS


def _check_message(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    if not isinstance(msg, Request | Response):
        raise AssertionError(f"parse_message returned {type(msg).__name__}")
    names = (*ACCESSORS, "request_uri") if isinstance(msg, Request) else ACCESSORS
    for name in names:
        with contextlib.suppress(SipParseError):
            getattr(msg, name)
    with contextlib.suppress(SipParseError):
        _ = msg.defects
    raw = to_bytes(msg)
    again = parse_message(raw)
    if again != msg or to_bytes(again) != raw:
        raise AssertionError(f"round trip changed the message: {raw[:200]!r}")


def _frame(chunks: list[bytes]) -> tuple[list[object], bool]:
    """Events until NEED_DATA after the last chunk, and whether framing failed."""
    framer = StreamFramer()
    events: list[object] = []
    try:
        for chunk in chunks:
            framer.feed(chunk)
            # Every event consumes at least one byte: the bound stops a framer that loops.
            for _ in range(framer.buffered + 2):
                event = framer.next_message()
                if event is NEED_DATA:
                    break
                events.append(event)
            else:
                raise AssertionError("next_message never asked for more data")
    except SipParseError:
        return events, True
    return events, False


def _check_framing(data: bytes) -> None:
    whole = _frame([data])
    half = len(data) // 2
    split = _frame([data[:half], data[half:]])
    if whole != split:
        raise AssertionError(f"framing depends on chunking: {whole!r} != {split!r}")


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name atheris looks for
    _check_message(data)
    _check_framing(data)


def _libfuzzer_argv(argv: list[str]) -> list[str]:
    """argv for libFuzzer: new corpus units go to corpus-work/, crashes to artifacts/."""
    flags = [arg for arg in argv[1:] if arg.startswith("-")]
    paths = [arg for arg in argv[1:] if not arg.startswith("-")]
    if all(Path(p).is_dir() for p in paths):  # corpus mode; files would be replayed once
        # libFuzzer writes new units into the first corpus directory: never the seeds.
        if not paths or Path(paths[0]).resolve() == SEEDS:
            WORK.mkdir(exist_ok=True)
            paths.insert(0, str(WORK))
        if str(SEEDS) not in (str(Path(p).resolve()) for p in paths):
            paths.append(str(SEEDS))
    if not any(flag.startswith("-artifact_prefix=") for flag in flags):
        ARTIFACTS.mkdir(exist_ok=True)
        flags.append(f"-artifact_prefix={ARTIFACTS}/")
    return [argv[0], *flags, *paths]


def _replay(paths: list[str]) -> None:
    """Without atheris: run every given file (or every file in a given directory) once."""
    files = [f for p in paths for f in (sorted(Path(p).iterdir()) if Path(p).is_dir() else [p])]
    for path in files:
        TestOneInput(Path(path).read_bytes())
    print(f"replayed {len(files)} inputs without atheris: contract held")


def main() -> None:
    if atheris is None:
        _replay([arg for arg in sys.argv[1:] if not arg.startswith("-")] or [str(SEEDS)])
        return
    atheris.Setup(_libfuzzer_argv(sys.argv), TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
