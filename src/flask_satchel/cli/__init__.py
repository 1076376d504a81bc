"""``flask session …``: the command group the extension adds to the app's CLI."""

from .commands import session_cli

__all__ = ["session_cli"]
