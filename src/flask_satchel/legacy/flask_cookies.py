"""Flask's own signed-cookie sessions, read once so their users stay logged in (``SESSION_MIGRATE_FLASK_COOKIES``).

The cookie is checked exactly as Flask checks it, with Flask's own
serializer (``SECRET_KEY`` and its fallbacks, the salt, the age limit of
``PERMANENT_SESSION_LIFETIME``); a cookie that fails any of it is no Flask
session and imports nothing.
"""

from __future__ import annotations

import math
import typing as t

from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadSignature

from . import Imported

if t.TYPE_CHECKING:
    from flask import Flask

_flask_cookies = SecureCookieSessionInterface()


def read_flask_cookie(app: Flask, value: str, default_permanent: bool) -> Imported | None:
    """The Flask session sealed in ``value``, or None when it is not one (or too old)."""
    serializer = _flask_cookies.get_signing_serializer(app)
    if serializer is None:
        return None
    try:
        data = serializer.loads(value, max_age=int(app.permanent_session_lifetime.total_seconds()))
    except BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    permanent = bool(data.pop("_permanent", default_permanent))
    # Flask's cookie carries no deadline of its own: the signature's age limit was the check.
    return Imported(data=data, permanent=permanent, expires_at=math.inf)
