"""identity_takeover (conventions.md §1). Detectors of this family are added here."""

from __future__ import annotations

__all__: list[str] = []
