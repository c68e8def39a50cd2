"""The capture kit in tools/capture/ stays usable: its Kamailio config parses, its script is sane.

Running the whole kit needs root, the network tools and PyPI, so it is not run here; these tests
catch the cheap breakages (a config Kamailio 5.6 rejects, a listen address off loopback).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import REPO, need_tool

KIT = REPO / "tools" / "capture"


def _config(tmp_path: Path, port: int = 55060) -> Path:
    text = (KIT / "kamailio.cfg.in").read_text(encoding="utf-8")
    text = text.replace("@PORT@", str(port)).replace("@PASSWORD@", "test-only")
    path = tmp_path / "kamailio.cfg"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_listens_on_loopback_only(tmp_path: Path) -> None:
    text = _config(tmp_path).read_text(encoding="utf-8")
    listens = re.findall(r"^listen=(.+)$", text, flags=re.MULTILINE)
    assert listens == ["udp:127.0.0.1:55060"]
    assert "@" not in re.sub(r"sip:\S+@", "", text.split("request_route", 1)[0])


def test_kamailio_accepts_the_config(tmp_path: Path) -> None:
    kamailio = need_tool("kamailio", "kamailio")
    done = subprocess.run(
        [kamailio, "-c", "-f", str(_config(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_script_cleans_up_and_stays_bounded() -> None:
    script = (KIT / "make_captures.sh").read_text(encoding="utf-8")
    assert "trap cleanup EXIT" in script
    assert "timeout 120" in script
    # Bounded ranges, as documented in tools/capture/README.md.
    assert "-e100-199" in script
    assert "-r1000-1100" in script
