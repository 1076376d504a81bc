"""Lifecycle signals, sent with blinker as Flask's own signals are.

Each is sent with the app as sender and the session's ``handle`` — never its
sid, so a receiver can write an audit log without holding secrets::

    from flask_satchel.signals import session_revoked

    @session_revoked.connect_via(app)
    def audit(app, handle, **extra):
        app.logger.info("session %s revoked", handle)
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A new session was stored (its first write). ``handle``.
session_created = _signals.signal("satchel-session-created")
#: ``session.regenerate()`` (or a rotation) moved a session to a new id. ``handle``, ``old_handle``.
session_regenerated = _signals.signal("satchel-session-regenerated")
#: ``session.destroy()`` ended a session. ``handle``.
session_destroyed = _signals.signal("satchel-session-destroyed")
#: The manager ended a session: ``revoke``, ``revoke_user`` or the per-user cap. ``handle``.
session_revoked = _signals.signal("satchel-session-revoked")
#: A request came with a session past its idle or absolute timeout. ``handle``.
session_expired = _signals.signal("satchel-session-expired")
