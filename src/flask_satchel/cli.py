"""``flask session …``: manage an app's sessions from the command line.

Every command works on every store; where a store cannot answer honestly
(counting memcached's keys, say) the command says so and exits non-zero.
"""

from __future__ import annotations

import functools
import json
import typing as t

import click
from flask import current_app
from flask.cli import AppGroup

from .errors import SatchelError

if t.TYPE_CHECKING:
    from .manager import SessionInfo, SessionManager

session_cli = AppGroup("session", help="Manage Flask-Satchel sessions.")

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def _manager() -> SessionManager:
    try:
        return t.cast("SessionManager", current_app.extensions["satchel"])
    except KeyError:
        raise click.ClickException("Flask-Satchel is not installed on this app; call Session(app)") from None


def _friendly(f: F) -> F:
    """Report Flask-Satchel's errors as a one-line message, not a traceback."""

    @functools.wraps(f)
    def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return f(*args, **kwargs)
        except SatchelError as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from None

    return t.cast(F, wrapper)


def _row(info: SessionInfo) -> dict[str, t.Any]:
    return {
        "handle": info.handle,
        "user": info.user,
        "created_at": info.created_at.isoformat(timespec="seconds"),
        "last_seen": info.last_seen.isoformat(timespec="seconds"),
        "expires_at": info.expires_at.isoformat(timespec="seconds"),
        "permanent": info.permanent,
        "ip": info.ip,
        "user_agent": info.user_agent,
    }


@session_cli.command("cleanup")
@_friendly
def cleanup_command() -> None:
    """Delete expired sessions from the store."""
    click.echo(f"Removed {_manager().cleanup()} expired sessions.")


@session_cli.command("count")
@_friendly
def count_command() -> None:
    """Print how many live sessions there are."""
    click.echo(_manager().count())


@session_cli.command("list")
@click.option("--user", "user", default=None, help="Only this user's sessions.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@_friendly
def list_command(user: str | None, as_json: bool) -> None:
    """List live sessions, most recently seen first."""
    rows = [_row(info) for info in _manager().sessions(user)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No sessions.")
        return
    columns = ("handle", "user", "created_at", "last_seen", "expires_at")
    widths = {c: max(len(c), *(len(str(r[c] or "-")) for r in rows)) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        click.echo("  ".join(str(r[c] or "-").ljust(widths[c]) for c in columns))


@session_cli.command("revoke")
@click.argument("handle")
@_friendly
def revoke_command(handle: str) -> None:
    """End the session with this HANDLE."""
    if not _manager().revoke(handle):
        raise click.ClickException(f"No session with handle {handle!r}.")
    click.echo(f"Revoked {handle}.")


@session_cli.command("revoke-user")
@click.argument("user")
@click.option("--keep", default=None, metavar="HANDLE", help="Leave this session alive.")
@_friendly
def revoke_user_command(user: str, keep: str | None) -> None:
    """End every session of USER."""
    click.echo(f"Revoked {_manager().revoke_user(user, keep=keep)} sessions of {user}.")


@session_cli.command("create-table")
@_friendly
def create_table_command() -> None:
    """Create the session table (sqlalchemy store) if it is missing."""
    store = _manager().store
    create_table = getattr(store, "create_table", None)
    if create_table is None:
        raise click.ClickException(f"{type(store).__name__} has no table to create; only the sqlalchemy store does.")
    create_table()
    click.echo("The session table is ready.")
