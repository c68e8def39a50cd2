"""P-Access-Network-Info (RFC 7315 §5.4): access type and cell/location parameters.

IMS operators use it to tie a registration to a radio cell; the SIM-swap and roaming detectors
read ``access_type`` and the ``*-cell-id-3gpp`` parameters.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from sipwarden.sip import _abnf
from sipwarden.sip.hdr.params import Params, param_value, parse_params, split_commas

__all__ = ["AccessNetworkInfo", "parse_access_network_info"]

_ACCESS_TYPE = re.compile(_abnf.TOKEN)


class AccessNetworkInfo(NamedTuple):
    access_type: str
    params: Params

    def param(self, name: str) -> str | None:
        return param_value(self.params, name.lower())

    @property
    def cell_id(self) -> str | None:
        """The first ``*-cell-id-3gpp`` or ``cgi-3gpp`` parameter, whichever is present."""
        for name, value in self.params:
            lname = name.lower()
            if lname.endswith("cell-id-3gpp") or lname == "cgi-3gpp":
                return value.strip('"') if value else None
        return None


def parse_access_network_info(value: str) -> tuple[AccessNetworkInfo, ...]:
    items = []
    for part in split_commas(value):
        match = _ACCESS_TYPE.match(part)
        if match is None:
            raise ValueError(f"P-Access-Network-Info must start with an access type: {part[:40]!r}")
        items.append(AccessNetworkInfo(match.group(0), parse_params(part[match.end() :])))
    return tuple(items)
