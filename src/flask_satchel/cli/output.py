"""How ``flask session`` commands print: columns and ages for people, JSON for scripts, one line for a failure."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import sys
import typing as t
from urllib.parse import urlsplit

import click

from ..errors import SatchelError

if t.TYPE_CHECKING:
    from ..manager import Progress, SessionInfo

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


class JsonError(click.ClickException):
    """A failure under ``--json``: ``{"error": message}`` on stderr instead of ``Error: message``."""

    def show(self, file: t.IO[t.Any] | None = None) -> None:
        click.echo(json.dumps({"error": self.format_message()}), file=file, err=file is None)


class JsonUsageError(click.UsageError):
    """A command line that cannot be parsed, under ``--json``: the usage text would not be JSON."""

    def show(self, file: t.IO[t.Any] | None = None) -> None:
        click.echo(json.dumps({"error": self.format_message()}), file=file, err=file is None)


class Command(click.Command):
    """A command whose usage errors are JSON when ``--json`` is on the command line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        as_json = "--json" in args
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            if not as_json or isinstance(e, JsonUsageError):
                raise
            raise JsonUsageError(e.format_message(), e.ctx) from None


def friendly(f: F) -> F:
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


def plural(count: int, noun: str) -> str:
    """``1 session``, ``2 sessions``, ``0 sessions``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


def echo_json(value: t.Any) -> None:
    click.echo(json.dumps(value, indent=2))


# Formatting for people ------------------------------------------------------


def clean(text: str | None) -> str:
    """A value as it may be printed to a terminal: ``-`` for none, control characters escaped.

    User agents come from clients; an escape sequence in one must not drive
    the operator's terminal.
    """
    if not text:
        return "-"
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


#: How much of a user agent ``list`` prints, so that a row fits a terminal line.
AGENT_WIDTH = 50


def when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def span(seconds: float) -> str:
    """A duration in its largest whole unit, rounded: a session expiring in 29.99 days is "30 d"."""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{round(seconds / size)} {unit}"
    return f"{int(seconds)} s"


def ago(moment: dt.datetime, now: dt.datetime) -> str:
    """``3 h ago`` for the past, ``in 3 h`` for the future."""
    seconds = (now - moment).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    return f"{span(seconds)} ago" if seconds > 0 else f"in {span(seconds)}"


def table(header: t.Sequence[str] | None, rows: t.Sequence[t.Sequence[str]]) -> None:
    """Print aligned columns, under a header line when there is one."""
    lines = list(rows) if header is None else [header, *rows]
    widths = [max(len(cell) for cell in column) for column in zip(*lines, strict=True)]
    for line in lines:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def short(text: str, width: int = AGENT_WIDTH) -> str:
    """``text`` cut to ``width`` characters, ending in ``…`` when it was cut (``show`` prints it whole)."""
    return text if len(text) <= width else text[: width - 1] + "…"


def iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def row(info: SessionInfo) -> dict[str, t.Any]:
    row: dict[str, t.Any] = {
        "handle": info.handle,
        "user": info.user,
        "created_at": iso(info.created_at),
        "last_seen": iso(info.last_seen),
        "expires_at": iso(info.expires_at),
        "permanent": info.permanent,
        "ip": info.ip,
        "user_agent": info.user_agent,
    }
    if info.keys is not None:
        row["keys"] = list(info.keys)
    return row


def redacted(url: str) -> str:
    """A URL fit to print: its password, if any, replaced by ``***``."""
    netloc = urlsplit(url).netloc
    userinfo, at, host = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return url.replace(netloc, f"{userinfo.partition(':')[0]}:***@{host}", 1)


# Progress bars --------------------------------------------------------------


def interactive(as_json: bool) -> bool:
    """Whether to draw a progress bar: only for a person at a terminal."""
    return not as_json and sys.stdout.isatty()


@contextlib.contextmanager
def progress_bar(label: str, show: bool) -> t.Iterator[Progress | None]:
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
