"""``SESSION_MAX_PER_USER``: how many live sessions one user may have.

Past the cap, the "revoke_oldest" policy logs out the user's least recently
seen sessions when a new one is stored; "refuse" raises ``TooManySessions``
where the view sets the user, so the login view can say why.
"""

from __future__ import annotations

import typing as t

from . import signals
from .errors import TooManySessions

if t.TYPE_CHECKING:
    from flask import Flask

    from .stores.base import Store


class UserCap:
    """Keeps each user of one store within ``cap`` sessions."""

    def __init__(self, store: Store, cap: int, policy: str) -> None:
        self.store = store
        self.cap = cap
        #: "revoke_oldest" or "refuse".
        self.policy = policy

    def admit(self, user: str, own: str | None, now: float) -> None:
        """With "refuse": ``TooManySessions`` when ``user`` has ``cap`` sessions besides ``own`` already."""
        if self.policy != "refuse":
            return
        others = [handle for handle, _ in self.store.sessions(now, user) if handle != own]
        if len(others) >= self.cap:
            raise TooManySessions(
                f"user {user!r} already has {len(others)} sessions, the most SESSION_MAX_PER_USER allows;"
                " log one out first"
            )

    def enforce(self, app: Flask, user: str, own: str, now: float) -> None:
        """With "revoke_oldest": revoke ``user``'s least recently seen sessions past the cap, ``own`` kept."""
        if self.policy != "revoke_oldest":
            return
        others = sorted(((r.last_seen, h) for h, r in self.store.sessions(now, user) if h != own), reverse=True)
        for _, handle in others[self.cap - 1 :]:
            if self.store.delete(handle):
                signals.session_revoked.send(app, handle=handle)
