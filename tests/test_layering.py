"""The core stays sans-IO (design.md §2.1): sip/, detect/ and the gateway's deciding parts import
no sockets, files, clocks or threads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sipwarden

SRC = Path(sipwarden.__file__).parent
FORBIDDEN = {
    "asyncio",
    "socket",
    "ssl",
    "selectors",
    "threading",
    "time",
    "httpx",
    "redis",
    "subprocess",
    "logging",
    "os",
    "pathlib",
    "io",
    "sqlite3",
    "typer",
    "rich",
}
#: The pure parts of the gateway: policy, sanitising, verdicts and the proxy core decide; only
#: gateway/server.py touches sockets and the clock.
PURE_GATEWAY = [
    SRC / "gateway" / name
    for name in ("policy.py", "sanitize.py", "topology.py", "verdict.py", "proxy.py")
]
#: Blocklist state and its exports: the store's rules and the in-memory default are pure too.
PURE_STORE = [
    SRC / "store" / "base.py",
    SRC / "store" / "memory.py",
    SRC / "output" / "blocklist.py",
]
CORE = sorted(
    [*(SRC / "sip").rglob("*.py"), *(SRC / "detect").rglob("*.py"), *PURE_GATEWAY, *PURE_STORE]
)


def top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(SRC)))
def test_core_is_sans_io(path: Path) -> None:
    bad = top_level_imports(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


@pytest.mark.parametrize(
    "path", sorted((SRC / "sip").rglob("*.py")), ids=lambda p: str(p.relative_to(SRC))
)
def test_sip_core_is_stdlib_only(path: Path) -> None:
    allowed_third_party = {"sipwarden"}
    stdlib = {
        "re",
        "dataclasses",
        "enum",
        "ipaddress",
        "typing",
        "collections",
        "hashlib",
        "hmac",
        "urllib",
        "__future__",
        "abc",
    }
    bad = top_level_imports(path) - stdlib - allowed_third_party
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"
