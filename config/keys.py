"""API keys as configuration holds them: a name, a role and the key's SHA-256, never the key itself."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

ROLES = ("inspect", "admin")


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: str
    digest: bytes


def hash_key(key: str) -> str:
    """The SHA-256 (hex) that configuration holds for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def parse_keys(text: str | None) -> list[ApiKey]:
    """``name:role:sha256hex`` entries separated by commas; a malformed entry stops the service at start."""
    keys: list[ApiKey] = []
    for entry in filter(None, (e.strip() for e in (text or "").split(","))):
        parts = entry.split(":")
        if len(parts) != 3 or not parts[0] or parts[1] not in ROLES or not re.fullmatch(r"[0-9a-f]{64}", parts[2]):
            raise ValueError(
                f"INSPECT_API_KEYS entry {entry[:40]!r} is not name:role:sha256 (role inspect or admin, the key's "
                "SHA-256 as 64 lower-case hex digits: python -m ingest new-key --name NAME --role ROLE)"
            )
        keys.append(ApiKey(parts[0], parts[1], bytes.fromhex(parts[2])))
    if len({k.name for k in keys}) != len(keys):
        raise ValueError("INSPECT_API_KEYS names a key twice; give each key its own name")
    return keys
