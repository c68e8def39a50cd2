"""``sipwarden parse FILE|- [--format json|text]``: show what a SIP message says, or why not."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sipwarden.cli._pipes import end_quietly_on_broken_pipe
from sipwarden.errors import InputError
from sipwarden.output.message import (
    error_to_json,
    message_to_json,
    render_error_text,
    render_message_text,
)
from sipwarden.sip import DEFAULT_LIMITS, SipParseError, parse_message

__all__ = ["parse_command"]


class Format(StrEnum):
    json = "json"
    text = "text"


def _read(source: str, limit: int) -> bytes:
    """Read at most ``limit + 1`` bytes: a bigger input is refused, never loaded whole."""
    if source == "-":
        return sys.stdin.buffer.read(limit + 1)
    path = Path(source)
    try:
        with path.open("rb") as handle:
            return handle.read(limit + 1)
    except FileNotFoundError:
        raise InputError(source, "no such file") from None
    except IsADirectoryError:
        raise InputError(source, "is a directory, not a file") from None
    except OSError as exc:
        raise InputError(source, exc.strerror or str(exc)) from None


def parse_command(
    source: Annotated[
        str, typer.Argument(metavar="FILE|-", help="A file with one SIP message, or -.")
    ],
    output_format: Annotated[
        Format, typer.Option("--format", "-f", help="text for people, json for tools.")
    ] = Format.text,
) -> None:
    """Parse one SIP message; exit 0 if it is valid, 1 if RFC 3261/4475 call it invalid."""
    end_quietly_on_broken_pipe()
    data = _read(source, DEFAULT_LIMITS.max_message_bytes)
    name = "<stdin>" if source == "-" else source
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        if output_format is Format.json:
            typer.echo(json.dumps(error_to_json(exc), ensure_ascii=False, indent=2))
        else:
            typer.echo(render_error_text(exc, name))
        raise typer.Exit(1) from None
    if output_format is Format.json:
        typer.echo(json.dumps(message_to_json(msg), ensure_ascii=False, indent=2))
    else:
        typer.echo(render_message_text(msg, name))
    raise typer.Exit(0 if msg.is_valid else 1)
