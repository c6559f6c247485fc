"""Subscriber secrets and what Mosquitto needs to confine each subscriber to its own topics.

A subscriber gets two random secrets: an API token (stored as SHA-256; it is 256 random bits,
so a slow hash adds nothing) and a broker password (stored in Mosquitto's own ``$7$``
PBKDF2-SHA512 form, so the password file can be written without ever knowing the password).
The broker username of subscriber ``X`` is ``sub-X``; its ACL grants read on exactly the topics
of its subscriptions and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

_PBKDF2_ITERATIONS = 1000


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mosquitto_hash(password: str, *, salt: bytes | None = None) -> str:
    """The ``$7$`` password-file hash of Mosquitto 2 (what ``mosquitto_passwd`` writes)."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${_PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def broker_username(subscriber_id: str) -> str:
    return f"sub-{subscriber_id}"


def render_passwd(base: str, subscribers: Mapping[str, str]) -> str:
    """``base`` (services and gateways) plus one ``sub-X:hash`` line per subscriber."""
    lines = [line for line in base.splitlines() if line.strip()]
    lines += [f"{broker_username(sid)}:{hashed}" for sid, hashed in sorted(subscribers.items())]
    return "\n".join(lines) + "\n"


def render_acl(base: str, grants: Mapping[str, Iterable[str]]) -> str:
    """``base`` plus, per subscriber, a ``user`` block reading only its subscription topics.

    A subscriber with no subscriptions still gets its block (empty), so it can connect but
    read nothing."""
    blocks = [base.rstrip("\n"), "", "# Generated from the subscriptions table; do not edit."]
    for sid in sorted(grants):
        blocks.append(f"user {broker_username(sid)}")
        blocks += [f"topic read {topic}" for topic in sorted(grants[sid])]
        blocks.append("")
    return "\n".join(blocks).rstrip("\n") + "\n"


def write_atomically(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Mosquitto may reload at any moment: it must never read a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
