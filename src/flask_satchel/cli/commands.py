"""``flask session …``: manage an app's sessions from the command line.

Every command works on every store; where a store cannot answer honestly
(counting memcached's keys, say) the command says so and exits with code 1.
Output is for people by default (aligned columns, times in UTC such as
``2026-11-22 08:01 UTC``, ages such as ``3 h ago``); ``--json`` gives scripts
stable field names and ISO 8601 times instead.

A failure prints nothing on stdout and one line on stderr: ``Error: …`` for
people, or under ``--json`` a JSON object ``{"error": "…"}`` holding the
same message, so a script that parses what a command prints never mistakes
an error for a result. The exit code is 1 (2 for a command line click cannot
parse, such as a missing argument).

Commands that take a session take its *handle*: the 32 hex digits ``list``
prints and an app reads as ``session.handle``. A handle is not the session
cookie's value, and the cookie's value is not accepted in its place.
"""

from __future__ import annotations

import json
import typing as t

import click
from flask import current_app
from flask.cli import AppGroup

from .. import settings as _settings
from ..manager import HANDLE
from ..stores import open_store
from ..stores.base import HasSchema
from .output import (
    Command,
    ago,
    clean,
    echo_json,
    friendly,
    interactive,
    iso,
    json_option,
    plural,
    progress_bar,
    redacted,
    row,
    short,
    table,
    when,
)

if t.TYPE_CHECKING:
    from ..manager import Progress, SessionManager, Stats
    from ..stores.base import Store


#: App config keys ``migrate`` does not hand to the target store: they describe the source.
_SOURCE_ONLY = frozenset(
    {
        "SESSION_URL",
        "SESSION_TYPE",
        "SESSION_REDIS",
        "SESSION_MEMCACHED",
        "SESSION_SQLALCHEMY",
        "SESSION_FILE_DIR",
        "SESSION_FILE_THRESHOLD",
        "SESSION_COOKIE_REVOCATION_URL",
    }
)


def _manager() -> SessionManager:
    try:
        return t.cast("SessionManager", current_app.extensions["satchel"])
    except KeyError:
        raise click.ClickException("Flask-Satchel is not installed on this app; call Session(app)") from None


session_cli = AppGroup("session", help="Manage Flask-Satchel sessions.")
session_cli.command_class = Command


def _handle(value: str) -> str:
    """``value`` if it has the shape of a handle; otherwise an error that says what a handle is and where to find one.

    People paste the session cookie (or a sid from a log) where a handle
    belongs; "no session with handle …" alone does not tell them why.
    """
    if HANDLE.fullmatch(value):
        return value
    # The value is not repeated: it may well be a secret session id, and stderr ends up in logs.
    raise click.ClickException(
        "Not a session handle (that is 32 hex digits). A handle is the public id of a session, not the"
        " session cookie's value: find it with `flask session list` (--user USER for one user's sessions),"
        " or in the app as session.handle."
    )


# Commands -------------------------------------------------------------------


@session_cli.command("cleanup")
@json_option
@friendly
def cleanup_command(as_json: bool) -> None:
    """Delete expired sessions from the store."""
    with progress_bar("Removing expired sessions", interactive(as_json)) as progress:
        removed = _manager().cleanup(progress)
    if as_json:
        echo_json({"removed": removed})
    else:
        click.echo(f"Removed {plural(removed, 'expired session')}.")


@session_cli.command("count")
@json_option
@friendly
def count_command(as_json: bool) -> None:
    """Print how many live sessions there are."""
    count = _manager().count()
    click.echo(json.dumps({"count": count}) if as_json else count)


@session_cli.command("list")
@click.option("--user", "user", default=None, help="Only this user's sessions.")
@json_option
@friendly
def list_command(user: str | None, as_json: bool) -> None:
    """List live sessions, most recently seen first."""
    manager = _manager()
    infos = manager.sessions(user)
    if as_json:
        echo_json([row(info) for info in infos])
        return
    if not infos:
        click.echo("No sessions.")
        return
    now = manager.now()
    header: tuple[str, ...] = ("handle", "user", "created_at", "last_seen", "expires_at")
    rows: list[tuple[str, ...]] = [
        (info.handle, clean(info.user), when(info.created_at), ago(info.last_seen, now), when(info.expires_at))
        for info in infos
    ]
    # Where the app tracks clients (or did, when these sessions were made), the
    # ip and user agent are what tells a person which device a session is.
    if manager.settings.track_client or any(info.ip or info.user_agent for info in infos):
        header += ("ip", "user_agent")
        rows = [(*row, clean(info.ip), short(clean(info.user_agent))) for row, info in zip(rows, infos, strict=True)]
    table(header, rows)


@session_cli.command("show")
@click.argument("handle")
@json_option
@friendly
def show_command(handle: str, as_json: bool) -> None:
    """Show one session's metadata and the names of its keys (never their values)."""
    manager = _manager()
    info = manager.info(_handle(handle))
    if info is None:
        raise click.ClickException(f"No session with handle {handle!r}.")
    if as_json:
        echo_json(row(info))
        return
    now = manager.now()
    table(
        None,
        [
            ("handle", info.handle),
            ("user", clean(info.user)),
            ("created", f"{when(info.created_at)} ({ago(info.created_at, now)})"),
            ("last seen", f"{when(info.last_seen)} ({ago(info.last_seen, now)})"),
            ("expires", f"{when(info.expires_at)} ({ago(info.expires_at, now)})"),
            ("permanent", "yes" if info.permanent else "no"),
            ("ip", clean(info.ip)),
            ("user agent", clean(info.user_agent)),
            ("keys", ", ".join(clean(key) for key in info.keys or ()) or "-"),
        ],
    )


@session_cli.command("stats")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=0), help="How many users to rank.")
@json_option
@friendly
def stats_command(top: int, as_json: bool) -> None:
    """Summarise the live sessions: how many, how old, and who holds the most."""
    stats: Stats = _manager().stats(top)
    age = stats.oldest_age
    if as_json:
        echo_json(
            {
                "as_of": iso(stats.as_of),
                "count": stats.count,
                "permanent": stats.permanent,
                "anonymous": stats.anonymous,
                "users": stats.users,
                "top_users": [{"user": user, "sessions": n} for user, n in stats.top_users],
                "oldest_created_at": iso(stats.oldest_created_at),
                "oldest_age_seconds": None if age is None else age.total_seconds(),
            }
        )
        return
    oldest = "-"
    if stats.oldest_created_at is not None:
        oldest = f"{when(stats.oldest_created_at)} ({ago(stats.oldest_created_at, stats.as_of)})"
    table(
        None,
        [
            ("sessions", str(stats.count)),
            ("permanent", str(stats.permanent)),
            ("anonymous", str(stats.anonymous)),
            ("users", str(stats.users)),
            ("oldest", oldest),
        ],
    )
    if stats.top_users:
        click.echo()
        table(("user", "sessions"), [(clean(user), str(n)) for user, n in stats.top_users])


@session_cli.command("revoke")
@click.argument("handle")
@json_option
@friendly
def revoke_command(handle: str, as_json: bool) -> None:
    """End the session with this HANDLE."""
    if not _manager().revoke(_handle(handle)):
        raise click.ClickException(f"No session with handle {handle!r}.")
    click.echo(json.dumps({"handle": handle, "revoked": True}) if as_json else f"Revoked {handle}.")


@session_cli.command("revoke-user")
@click.argument("user")
@click.option("--keep", default=None, metavar="HANDLE", help="Leave this session alive.")
@json_option
@friendly
def revoke_user_command(user: str, keep: str | None, as_json: bool) -> None:
    """End every session of USER."""
    if keep is not None:
        # A mistyped --keep must not end the very session it was meant to keep.
        _handle(keep)
    manager = _manager()
    revoked = manager.revoke_user(user, keep=keep)
    # The cookie store ends a user's sessions by date, in browsers it cannot count.
    counted = manager.store is not None
    if as_json:
        echo_json({"user": user, "revoked": revoked if counted else None, "kept": keep})
    elif counted:
        click.echo(f"Revoked {plural(revoked, 'session')} of {user}.")
    else:
        click.echo(f"Revoked every session of {user} (the cookie store cannot count them).")


def _open_target(url: str) -> Store:
    """The store at ``url``, configured like the app's own (prefix, timeouts, table name …)."""
    config = {k: v for k, v in current_app.config.items() if k.startswith("SESSION_") and k not in _SOURCE_ONLY}
    config["PERMANENT_SESSION_LIFETIME"] = current_app.config["PERMANENT_SESSION_LIFETIME"]
    config["SESSION_URL"] = url
    target = _settings.load(config, current_app.instance_path)
    try:
        return open_store(target.store)
    except ImportError as e:
        raise click.ClickException(f"cannot open a {target.type} store: {e}") from None


@session_cli.command("migrate")
@click.option("--to", "url", required=True, metavar="URL", help="The target store, as a SESSION_URL.")
@click.option(
    "--prune",
    is_flag=True,
    help="Also delete sessions the target holds that are no longer live here (ended since an earlier run)."
    " Only for a target that holds nothing but this copy.",
)
@json_option
@friendly
def migrate_command(url: str, prune: bool, as_json: bool) -> None:
    """Copy every live session to the store at URL, without logging anyone out.

    Sessions keep their ids, so once the app is configured with SESSION_URL
    set to URL and restarted, everyone is still logged in. The copy is
    idempotent: a session the target already holds unchanged is skipped, one
    that changed is overwritten. Sessions started or changed while the old
    app keeps running are not in the copy, so run it again (with --prune, so
    logouts since the first run stay logged out) right before the restart,
    ideally with the app stopped.
    """
    manager = _manager()
    store = _open_target(url)
    totals = [0]

    def counted(progress: Progress | None) -> Progress:
        def update(done: int, total: int) -> None:
            totals[0] = total
            if progress is not None:
                progress(done, total)

        return update

    try:
        with progress_bar("Copying sessions", interactive(as_json)) as progress:
            written = manager.migrate_to(store, counted(progress))
        pruned = manager.prune_copy(store) if prune else None
    finally:
        store.close()
    where = redacted(url)
    if as_json:
        echo_json(
            {"target": where, "live": totals[0], "copied": written, "skipped": totals[0] - written, "pruned": pruned}
        )
        return
    click.echo(
        f"Copied {written} of {plural(totals[0], 'live session')} to {where}"
        f" ({totals[0] - written} skipped: unchanged or ended)."
    )
    if pruned is not None:
        click.echo(f"Removed {plural(pruned, 'session')} from the target (ended here since an earlier copy).")
    click.echo(f"Next: set SESSION_URL = {where!r} and restart the app.")


@session_cli.command("create-table")
@json_option
@friendly
def create_table_command(as_json: bool) -> None:
    """Create the session table (sqlalchemy store) if it is missing."""
    store = _manager().store
    if not isinstance(store, HasSchema):
        raise click.ClickException(f"{type(store).__name__} has no table to create; only the sqlalchemy store does.")
    store.create_table()
    click.echo(json.dumps({"ready": True}) if as_json else "The session table is ready.")
