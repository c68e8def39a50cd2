"""The ``sipwarden`` command line: the only code that prints to the terminal or exits.

Errors that sipwarden raises on purpose (:class:`~sipwarden.errors.SipwardenError`) become one
line, ``error: <what> (<where>): <why>``; anything else is a bug and is reported as one.
Exit status: 0 = success / valid input, 1 = invalid input, 2 = usage error.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer

from sipwarden import __version__
from sipwarden.cli.analyze import analyze_command
from sipwarden.cli.blocklist import app as blocklist_app
from sipwarden.cli.detectors import app as detectors_app
from sipwarden.cli.gateway import gateway_command
from sipwarden.cli.parse import parse_command
from sipwarden.errors import SipwardenError

__all__ = ["app", "main"]

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2

app = typer.Typer(
    name="sipwarden",
    help="SIP network security for operators (GSMA FS.38): parse, detect, protect.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sipwarden {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """SIP network security for operators (GSMA FS.38)."""


app.command("parse")(parse_command)
app.command("analyze")(analyze_command)
app.add_typer(detectors_app, name="detectors")
app.add_typer(blocklist_app, name="blocklist")
app.command("gateway")(gateway_command)


def main() -> None:
    """Entry point of the ``sipwarden`` script and ``python -m sipwarden``."""
    try:
        # Standalone mode: typer prints usage errors (exit 2) and turns typer.Exit into the
        # process exit status itself.
        app()
    except SipwardenError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        typer.echo(
            "sipwarden hit a bug (traceback above); please report it with the command you ran.",
            err=True,
        )
        sys.exit(70)
