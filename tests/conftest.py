"""Shared fixtures: where the shared corpus lives, and how tests ask for real system tools.

Tests that need a real peer (a Debian package such as tshark, sipsak or kamailio) or the shared
corpus call :func:`need_tool` / :func:`need_shared`. On a developer's machine a missing peer is a
skip whose reason names the package to install. In CI, ``SIPWARDEN_REQUIRE_PEERS=1`` (set by
``.ci/run`` after it installs the packages) turns every such skip into a failure, so CI always
exercises the real peers.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SIPWARDEN_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus"


def _strict() -> bool:
    return os.environ.get("SIPWARDEN_REQUIRE_PEERS", "") not in ("", "0")


def _missing(reason: str) -> None:
    if _strict():
        pytest.fail(f"{reason} (SIPWARDEN_REQUIRE_PEERS is set, so this is a failure)")
    pytest.skip(reason)


def need_tool(binary: str, package: str) -> str:
    """Path of a system tool, or skip (fail under SIPWARDEN_REQUIRE_PEERS) naming the package."""
    path = shutil.which(binary)
    if path is None:
        for extra in ("/usr/sbin", "/sbin"):
            candidate = Path(extra) / binary
            if candidate.exists():
                return str(candidate)
        _missing(f"needs {binary!r}: install the Debian package {package!r}")
    return str(path)


def need_shared(relative: str) -> Path:
    """A path inside ../shared, or skip: shared data is not in a user's clone (licences)."""
    path = SHARED / relative
    if not path.exists():
        _missing(f"needs ../shared/{relative} (team corpus, not distributed with the repo)")
    return path
