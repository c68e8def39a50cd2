"""``sipwarden detectors list|describe ID``: what the registry holds and how each is configured."""

from __future__ import annotations

import inspect
from typing import Annotated

import typer

from sipwarden.errors import InputError

__all__ = ["app"]

app = typer.Typer(help="The detectors sipwarden runs, and their settings.", no_args_is_help=True)


@app.command("list")
def list_detectors() -> None:
    """One line per detector: id, threat family, and the first line of its docstring."""
    from sipwarden.detect import DETECTORS  # noqa: PLC0415 - keep `sipwarden --version` cheap

    width = max(len(detector_id) for detector_id in DETECTORS)
    for detector_id in sorted(DETECTORS):
        cls = DETECTORS[detector_id]
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        typer.echo(f"{detector_id:<{width}}  {cls.threat.value:<17}  {summary}")


@app.command("describe")
def describe(
    detector_id: Annotated[str, typer.Argument(metavar="ID", help="e.g. recon.scanner_user_agent")],
) -> None:
    """The detector's documentation and every setting with its default and description."""
    from sipwarden.detect import DETECTORS  # noqa: PLC0415

    cls = DETECTORS.get(detector_id)
    if cls is None:
        raise InputError(detector_id, f"no such detector; known: {', '.join(sorted(DETECTORS))}")
    typer.echo(f"{detector_id}  ({cls.threat.value})\n")
    typer.echo(inspect.cleandoc(cls.__doc__ or ""))
    typer.echo("\nsettings:")
    for name, info in cls.Config.model_fields.items():
        default = info.default
        typer.echo(f"  {name} = {default!r}")
        if info.description:
            typer.echo(f"      {info.description}")
