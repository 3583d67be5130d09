"""Anonymous reader identities signed by the server, so a client cannot clap as someone else.

A token is ``user.signature`` where the signature is an HMAC-SHA256 of the user id under the
server's secret. Every gateway of a deployment shares the secret, so a token from one gateway
is honoured by all of them.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re

from core.validation import is_valid_id

# 32 bytes of HMAC-SHA256 in unpadded urlsafe base64.
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")


def _signature(secret: bytes, user: str) -> str:
    digest = hmac.new(secret, user.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue_token(secret: bytes, user: str) -> str:
    if not is_valid_id(user):
        raise ValueError("user id must match [A-Za-z0-9_-]{1,64}")
    return f"{user}.{_signature(secret, user)}"


def verify_token(secret: bytes, token: object) -> str | None:
    """The user a token was issued to, or None if it is missing, malformed or forged.

    Never raises, whatever the client sent: the shape is checked before the comparison, since
    ``hmac.compare_digest`` refuses non-ASCII text.
    """
    if not isinstance(token, str) or "." not in token:
        return None
    user, _, signature = token.partition(".")
    if not is_valid_id(user) or _SIGNATURE.fullmatch(signature) is None:
        return None
    return user if hmac.compare_digest(signature.encode(), _signature(secret, user).encode()) else None
