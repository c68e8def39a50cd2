"""The sipwarden exception tree.

Library code raises subclasses of :class:`SipwardenError`; the CLI catches the root, prints
``error: <what> (<where>): <why>`` and exits non-zero. Any other exception reaching the CLI is a
bug and is reported as such.

::

    SipwardenError
    ├── SipParseError          sip/errors.py: a SIP message that cannot be parsed (code, offset)
    ├── InputError             a file or stream given by the user is unreadable (source, where)
    └── ConfigError            configuration that does not validate (key path)
"""

from __future__ import annotations

__all__ = ["ConfigError", "InputError", "SipwardenError"]


class SipwardenError(Exception):
    """Root of every error sipwarden raises on purpose."""


class InputError(SipwardenError):
    """An input named by the user (file, stdin, socket) could not be read as expected."""

    def __init__(self, source: str, detail: str, where: str | None = None) -> None:
        self.source = source
        self.detail = detail
        self.where = where
        place = f"{source}, {where}" if where else source
        super().__init__(f"{place}: {detail}")


class ConfigError(SipwardenError):
    """Configuration that does not validate; ``key`` is the dotted path of the bad key."""

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        self.detail = detail
        super().__init__(f"{key}: {detail}")
