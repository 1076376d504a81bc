"""Sessions too large for the database: ``SessionTooLarge``, never ``StoreUnavailable``.

No retry can store them. MySQL and MariaDB refuse a statement longer than
``max_allowed_packet`` and close the connection, so the client mostly sees
only "server has gone away", which would otherwise read as a dead
connection and be retried. So the store measures a large statement before
sending it: one whose blobs alone are over the limit is refused without
being sent; one that may or may not fit (written out as SQL, bytes take up
to twice their length) is sent, and the connection dying under it means it
was too large. The connection is invalidated, so the next request gets a
fresh one. The limit is read once, with ``SELECT @@max_allowed_packet``,
when the first session large enough to come near it is written. A
compare-and-set carries the old data as well as the new, so a session near
the limit skips it and is changed under the row lock, sending the new data
only. The row is left as it was: a refused ``INSERT`` writes nothing and a
refused change is rolled back. The errors the databases give for "too
large" (MySQL's 1153 and 1301, PostgreSQL's ``program_limit_exceeded``,
SQLite's "string or blob too big") are ``SessionTooLarge`` too.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa

from ...errors import SessionTooLarge

__all__ = ["PacketLimit"]

#: No MySQL or MariaDB release has a smaller ``max_allowed_packet`` by
#: default: a statement this short is sent without looking the limit up.
_SMALLEST_DEFAULT_PACKET = 1024 * 1024
#: Room in a writing statement for all but its blobs: the SQL, key, prefix, user and times.
_STATEMENT_ROOM = 4096

_QUERY = sa.text("SELECT @@max_allowed_packet")


class PacketLimit:
    """MySQL's ``max_allowed_packet``, read when first needed, and what a statement's size says about it."""

    def __init__(self, engine: sa.Engine, run: t.Callable[[t.Callable[[sa.Connection], int]], int]) -> None:
        #: Whether the database has a limit worth measuring (MySQL, MariaDB).
        self.limited = engine.dialect.name in ("mysql", "mariadb")
        #: The limit, once read.
        self.max_packet: int | None = None
        self._run = run

    def _read(self, conn: sa.Connection | None) -> int:
        """The limit, read once, on ``conn`` (inside a transaction) or a connection of its own."""
        limit = self.max_packet
        if limit is None:

            def read(conn: sa.Connection) -> int:
                return int(conn.execute(_QUERY).scalar_one())

            limit = self.max_packet = read(conn) if conn is not None else self._run(read)
        return limit

    def fits(self, blobs: t.Iterable[bytes | None], conn: sa.Connection | None = None) -> bool | None:
        """Whether a statement carrying ``blobs`` fits: True, False, or None when only the database can tell.

        A blob takes between one and two bytes of SQL per byte: PyMySQL
        writes bytes in hex, mysqlclient escapes some of them. Until a
        session is large enough to come near the smallest default limit, the
        limit is not read, so most apps never read it; on a server set below
        that default, a statement over the limit is still recognised when
        the server's error reaches the client, and otherwise looks like a
        lost connection.
        """
        if not self.limited:
            return True
        raw = sum(len(blob) for blob in blobs if blob)
        most = 2 * raw + _STATEMENT_ROOM
        if most <= _SMALLEST_DEFAULT_PACKET and self.max_packet is None:
            return True
        limit = self._read(conn)
        if most <= limit:
            return True
        return False if raw > limit else None

    def too_large(self, size: int | None) -> SessionTooLarge:
        """The error for a session of ``size`` encoded bytes (None: not known) that the database refused."""
        limit = self.max_packet if self.limited else None
        what = "The session" if size is None else f"The session, {size} bytes encoded,"
        over = (
            f"is over the database's max_allowed_packet of {limit} bytes in the statement that writes it"
            " (where each byte can take two)"
            if limit is not None
            else "is larger than the database accepts"
        )
        return SessionTooLarge(
            f"{what} {over}, so it was not written; store less in the session"
            + (", or raise max_allowed_packet on the server" if limit is not None else ""),
            size=size,
            limit=limit,
        )
