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

import contextlib
import datetime as dt
import functools
import json
import sys
import typing as t
from urllib.parse import urlsplit

import click
from flask import current_app
from flask.cli import AppGroup

from . import settings as _settings
from .errors import SatchelError
from .manager import _HANDLE
from .stores import open_store
from .stores.base import HasSchema

if t.TYPE_CHECKING:
    from .manager import Progress, SessionInfo, SessionManager, Stats
    from .stores.base import Store

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

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


class JsonError(click.ClickException):
    """A failure under ``--json``: ``{"error": message}`` on stderr instead of ``Error: message``."""

    def show(self, file: t.IO[t.Any] | None = None) -> None:
        click.echo(json.dumps({"error": self.format_message()}), file=file, err=file is None)


class JsonUsageError(click.UsageError):
    """A command line that cannot be parsed, under ``--json``: the usage text would not be JSON."""

    def show(self, file: t.IO[t.Any] | None = None) -> None:
        click.echo(json.dumps({"error": self.format_message()}), file=file, err=file is None)


class _Command(click.Command):
    """A command whose usage errors are JSON when ``--json`` is on the command line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        as_json = "--json" in args
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            if not as_json or isinstance(e, JsonUsageError):
                raise
            raise JsonUsageError(e.format_message(), e.ctx) from None


session_cli = AppGroup("session", help="Manage Flask-Satchel sessions.")
session_cli.command_class = _Command


def _friendly(f: F) -> F:
    """Report failures as one line, ``Error: …`` or under ``--json`` ``{"error": …}``, never a traceback."""

    @functools.wraps(f)
    def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            try:
                return f(*args, **kwargs)
            except SatchelError as e:
                raise click.ClickException(f"{type(e).__name__}: {e}") from None
        except click.ClickException as e:
            if kwargs.get("as_json") and not isinstance(e, JsonError):
                raise JsonError(e.format_message()) from None
            raise

    return t.cast(F, wrapper)


def _plural(count: int, noun: str) -> str:
    """``1 session``, ``2 sessions``, ``0 sessions``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _handle(value: str) -> str:
    """``value`` if it has the shape of a handle; otherwise an error that says what a handle is and where to find one.

    People paste the session cookie (or a sid from a log) where a handle
    belongs; "no session with handle …" alone does not tell them why.
    """
    if _HANDLE.fullmatch(value):
        return value
    # The value is not repeated: it may well be a secret session id, and stderr ends up in logs.
    raise click.ClickException(
        "Not a session handle (that is 32 hex digits). A handle is the public id of a session, not the"
        " session cookie's value: find it with `flask session list` (--user USER for one user's sessions),"
        " or in the app as session.handle."
    )


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


def _echo_json(value: t.Any) -> None:
    click.echo(json.dumps(value, indent=2))


# Formatting for people ------------------------------------------------------


def _clean(text: str | None) -> str:
    """A value as it may be printed to a terminal: ``-`` for none, control characters escaped.

    User agents come from clients; an escape sequence in one must not drive
    the operator's terminal.
    """
    if not text:
        return "-"
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


#: How much of a user agent ``list`` prints, so that a row fits a terminal line.
_AGENT_WIDTH = 50


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _span(seconds: float) -> str:
    """A duration in its largest whole unit, rounded: a session expiring in 29.99 days is "30 d"."""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{round(seconds / size)} {unit}"
    return f"{int(seconds)} s"


def _ago(moment: dt.datetime, now: dt.datetime) -> str:
    """``3 h ago`` for the past, ``in 3 h`` for the future."""
    seconds = (now - moment).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    return f"{_span(seconds)} ago" if seconds > 0 else f"in {_span(seconds)}"


def _table(header: t.Sequence[str] | None, rows: t.Sequence[t.Sequence[str]]) -> None:
    """Print aligned columns, under a header line when there is one."""
    lines = list(rows) if header is None else [header, *rows]
    widths = [max(len(cell) for cell in column) for column in zip(*lines, strict=True)]
    for line in lines:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _short(text: str, width: int = _AGENT_WIDTH) -> str:
    """``text`` cut to ``width`` characters, ending in ``…`` when it was cut (``show`` prints it whole)."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def _row(info: SessionInfo) -> dict[str, t.Any]:
    row: dict[str, t.Any] = {
        "handle": info.handle,
        "user": info.user,
        "created_at": _iso(info.created_at),
        "last_seen": _iso(info.last_seen),
        "expires_at": _iso(info.expires_at),
        "permanent": info.permanent,
        "ip": info.ip,
        "user_agent": info.user_agent,
    }
    if info.keys is not None:
        row["keys"] = list(info.keys)
    return row


def _redacted(url: str) -> str:
    """A URL fit to print: its password, if any, replaced by ``***``."""
    netloc = urlsplit(url).netloc
    userinfo, at, host = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return url.replace(netloc, f"{userinfo.partition(':')[0]}:***@{host}", 1)


# Progress bars --------------------------------------------------------------


def _interactive(as_json: bool) -> bool:
    """Whether to draw a progress bar: only for a person at a terminal."""
    return not as_json and sys.stdout.isatty()


@contextlib.contextmanager
def _progress(label: str, show: bool) -> t.Iterator[Progress | None]:
    """A ``progress(done, total)`` callback drawing a click progress bar, or None when not shown.

    The bar is made on the first call, once the total is known.
    """
    if not show:
        yield None
        return
    with contextlib.ExitStack() as stack:
        bars: list[t.Any] = []

        def update(done: int, total: int) -> None:
            if not bars:
                if not total:
                    return
                bars.append(stack.enter_context(click.progressbar(length=total, label=label)))
            bars[0].update(done - bars[0].pos)

        yield update


# Commands -------------------------------------------------------------------


@session_cli.command("cleanup")
@_json_option
@_friendly
def cleanup_command(as_json: bool) -> None:
    """Delete expired sessions from the store."""
    with _progress("Removing expired sessions", _interactive(as_json)) as progress:
        removed = _manager().cleanup(progress)
    if as_json:
        _echo_json({"removed": removed})
    else:
        click.echo(f"Removed {_plural(removed, 'expired session')}.")


@session_cli.command("count")
@_json_option
@_friendly
def count_command(as_json: bool) -> None:
    """Print how many live sessions there are."""
    count = _manager().count()
    click.echo(json.dumps({"count": count}) if as_json else count)


@session_cli.command("list")
@click.option("--user", "user", default=None, help="Only this user's sessions.")
@_json_option
@_friendly
def list_command(user: str | None, as_json: bool) -> None:
    """List live sessions, most recently seen first."""
    manager = _manager()
    infos = manager.sessions(user)
    if as_json:
        _echo_json([_row(info) for info in infos])
        return
    if not infos:
        click.echo("No sessions.")
        return
    now = manager.now()
    header: tuple[str, ...] = ("handle", "user", "created_at", "last_seen", "expires_at")
    rows: list[tuple[str, ...]] = [
        (info.handle, _clean(info.user), _when(info.created_at), _ago(info.last_seen, now), _when(info.expires_at))
        for info in infos
    ]
    # Where the app tracks clients (or did, when these sessions were made), the
    # ip and user agent are what tells a person which device a session is.
    if manager.settings.track_client or any(info.ip or info.user_agent for info in infos):
        header += ("ip", "user_agent")
        rows = [(*row, _clean(info.ip), _short(_clean(info.user_agent))) for row, info in zip(rows, infos, strict=True)]
    _table(header, rows)


@session_cli.command("show")
@click.argument("handle")
@_json_option
@_friendly
def show_command(handle: str, as_json: bool) -> None:
    """Show one session's metadata and the names of its keys (never their values)."""
    manager = _manager()
    info = manager.info(_handle(handle))
    if info is None:
        raise click.ClickException(f"No session with handle {handle!r}.")
    if as_json:
        _echo_json(_row(info))
        return
    now = manager.now()
    _table(
        None,
        [
            ("handle", info.handle),
            ("user", _clean(info.user)),
            ("created", f"{_when(info.created_at)} ({_ago(info.created_at, now)})"),
            ("last seen", f"{_when(info.last_seen)} ({_ago(info.last_seen, now)})"),
            ("expires", f"{_when(info.expires_at)} ({_ago(info.expires_at, now)})"),
            ("permanent", "yes" if info.permanent else "no"),
            ("ip", _clean(info.ip)),
            ("user agent", _clean(info.user_agent)),
            ("keys", ", ".join(_clean(key) for key in info.keys or ()) or "-"),
        ],
    )


@session_cli.command("stats")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=0), help="How many users to rank.")
@_json_option
@_friendly
def stats_command(top: int, as_json: bool) -> None:
    """Summarise the live sessions: how many, how old, and who holds the most."""
    stats: Stats = _manager().stats(top)
    age = stats.oldest_age
    if as_json:
        _echo_json(
            {
                "as_of": _iso(stats.as_of),
                "count": stats.count,
                "permanent": stats.permanent,
                "anonymous": stats.anonymous,
                "users": stats.users,
                "top_users": [{"user": user, "sessions": n} for user, n in stats.top_users],
                "oldest_created_at": _iso(stats.oldest_created_at),
                "oldest_age_seconds": None if age is None else age.total_seconds(),
            }
        )
        return
    oldest = "-"
    if stats.oldest_created_at is not None:
        oldest = f"{_when(stats.oldest_created_at)} ({_ago(stats.oldest_created_at, stats.as_of)})"
    _table(
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
        _table(("user", "sessions"), [(_clean(user), str(n)) for user, n in stats.top_users])


@session_cli.command("revoke")
@click.argument("handle")
@_json_option
@_friendly
def revoke_command(handle: str, as_json: bool) -> None:
    """End the session with this HANDLE."""
    if not _manager().revoke(_handle(handle)):
        raise click.ClickException(f"No session with handle {handle!r}.")
    click.echo(json.dumps({"handle": handle, "revoked": True}) if as_json else f"Revoked {handle}.")


@session_cli.command("revoke-user")
@click.argument("user")
@click.option("--keep", default=None, metavar="HANDLE", help="Leave this session alive.")
@_json_option
@_friendly
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
        _echo_json({"user": user, "revoked": revoked if counted else None, "kept": keep})
    elif counted:
        click.echo(f"Revoked {_plural(revoked, 'session')} of {user}.")
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
@_json_option
@_friendly
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
        with _progress("Copying sessions", _interactive(as_json)) as progress:
            written = manager.migrate_to(store, counted(progress))
        pruned = manager.prune_copy(store) if prune else None
    finally:
        store.close()
    where = _redacted(url)
    if as_json:
        _echo_json(
            {"target": where, "live": totals[0], "copied": written, "skipped": totals[0] - written, "pruned": pruned}
        )
        return
    click.echo(
        f"Copied {written} of {_plural(totals[0], 'live session')} to {where}"
        f" ({totals[0] - written} skipped: unchanged or ended)."
    )
    if pruned is not None:
        click.echo(f"Removed {_plural(pruned, 'session')} from the target (ended here since an earlier copy).")
    click.echo(f"Next: set SESSION_URL = {where!r} and restart the app.")


@session_cli.command("create-table")
@_json_option
@_friendly
def create_table_command(as_json: bool) -> None:
    """Create the session table (sqlalchemy store) if it is missing."""
    store = _manager().store
    if not isinstance(store, HasSchema):
        raise click.ClickException(f"{type(store).__name__} has no table to create; only the sqlalchemy store does.")
    store.create_table()
    click.echo(json.dumps({"ready": True}) if as_json else "The session table is ready.")
