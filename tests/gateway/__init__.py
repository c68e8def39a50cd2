"""Tests of the inline firewall: its pure parts (policy, sanitising, the proxy core) and its
adapters (server, CLI, metrics). Shared helpers below."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``sipwarden gateway ARGS`` as a user runs it (bounded: tests pass ``--duration``)."""
    return subprocess.run(
        [sys.executable, "-m", "sipwarden", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
