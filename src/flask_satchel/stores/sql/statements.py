"""Every statement the SQL store runs, built once per store as SQLAlchemy Core constructs.

Built once, each keeps its cache key (SQLAlchemy memoizes it on the
construct), so every run after the first finds its compiled form in the
engine's compiled cache. The app's prefix is bound as a value, not written
into the SQL, so apps sharing a table share the compiled statements too.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa

__all__ = ["CLEANUP_BATCH", "Statements"]

#: Rows deleted per transaction by ``cleanup``: short transactions keep locks brief.
CLEANUP_BATCH = 5000


def insert_if_absent(table: sa.Table, dialect: str) -> sa.Insert:
    """An INSERT that does nothing, rather than fail, when the primary key is taken.

    It returns the key it inserted where the database can (psycopg reports
    no row count for an INSERT that inserted nothing); MySQL's INSERT IGNORE
    counts rows.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing().returning(table.c.key)
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).on_conflict_do_nothing().returning(table.c.key)
    return sa.insert(table).prefix_with("IGNORE")


def _cleanup(table: sa.Table, prefix: str, dialect: str) -> sa.Delete:
    """Delete at most ``CLEANUP_BATCH`` rows of ``prefix`` expired at ``b_now``."""
    c = table.c
    expired = sa.and_(c.prefix == prefix, c.expires_at <= sa.bindparam("b_now"))
    if dialect in ("mysql", "mariadb"):
        # MySQL refuses LIMIT inside an IN subquery but has DELETE … LIMIT.
        return (
            sa.delete(table).where(expired).with_dialect_options(mysql_limit=CLEANUP_BATCH, mariadb_limit=CLEANUP_BATCH)
        )
    if dialect == "postgresql":
        # The batch's row addresses are gathered once (an InitPlan) and
        # deleted by address (a TID scan): linear whatever the statistics.
        # As ``key IN (subquery)`` PostgreSQL may plan a nested-loop
        # semi-join, quadratic in the batch: seconds for 5,000 rows of a
        # table not yet analysed. A row refreshed meanwhile has a new
        # address, and is tested against ``expired`` again anyway.
        ctid: sa.ColumnClause[t.Any] = sa.literal_column("ctid")
        batch = sa.select(ctid).select_from(table).where(expired).limit(CLEANUP_BATCH).scalar_subquery()
        still_expired = c.expires_at <= sa.bindparam("b_now")  # no prefix: keeps the planner on the TID scan
        return sa.delete(table).where(ctid == sa.any_(sa.func.array(batch)), still_expired)
    batch = sa.select(c.key).where(expired).limit(CLEANUP_BATCH).scalar_subquery()
    return sa.delete(table).where(expired, c.key.in_(batch))


class Statements:
    """The statements of one store: its table, its prefix, its database."""

    def __init__(self, table: sa.Table, lock_table: sa.Table | None, prefix: str, dialect: str) -> None:
        c = table.c
        pk = sa.and_(c.prefix == prefix, c.key == sa.bindparam("b_key"))
        live = sa.and_(c.prefix == prefix, c.expires_at > sa.bindparam("b_now"))
        meta = (c.created_at, c.last_seen, c.expires_at, c.permanent, c.user, c.client)
        self.load = sa.select(c.data, *meta).where(pk)
        self.insert = sa.insert(table)
        # After a dead connection the first INSERT may have landed: keys are
        # fresh 256-bit hashes, so a row already there can only be that one.
        self.insert_again = insert_if_absent(table, dialect)
        # Compare-and-set: the row is written only while it holds the bytes
        # the change was merged onto. The user and client columns are left
        # out unless the change sets them, so values another request wrote
        # there are kept; hence one statement per combination.
        unchanged = sa.and_(pk, c.data == sa.bindparam("b_seen"))
        self.delete_if_unchanged = sa.delete(table).where(unchanged)
        # Nor over a newer refresh: last_seen only moves forward (the locked path merges it).
        newer = sa.and_(unchanged, c.last_seen <= sa.bindparam("b_last_seen"))
        self.update_if_unchanged: dict[tuple[bool, bool], sa.Update] = {}
        for sets_user in (False, True):
            for sets_client in (False, True):
                values: dict[str, t.Any] = {
                    "data": sa.bindparam("b_data"),
                    "last_seen": sa.bindparam("b_last_seen"),
                    "expires_at": sa.bindparam("b_expires_at"),
                    "permanent": sa.bindparam("b_permanent"),
                }
                if sets_user:
                    values["user"] = sa.bindparam("b_user")
                if sets_client:
                    values["client"] = sa.bindparam("b_client")
                self.update_if_unchanged[sets_user, sets_client] = sa.update(table).where(newer).values(values)
        # SQLite has no row locks and no FOR UPDATE: taking its write lock
        # with an UPDATE before reading makes the read-merge-write atomic.
        self.lock_by_update = dialect == "sqlite"
        self.lock = sa.select(c.data, c.user, c.client, c.last_seen, c.expires_at).where(pk)
        if not self.lock_by_update:
            self.lock = self.lock.with_for_update()
        self.take_lock = sa.update(table).where(pk).values(last_seen=c.last_seen)  # writes nothing new
        self.update = (
            sa.update(table)
            .where(pk)
            .values(
                data=sa.bindparam("b_data"),
                last_seen=sa.bindparam("b_last_seen"),
                expires_at=sa.bindparam("b_expires_at"),
                permanent=sa.bindparam("b_permanent"),
                user=sa.bindparam("b_user"),
                client=sa.bindparam("b_client"),
            )
        )
        times: dict[str, t.Any] = {"last_seen": sa.bindparam("b_last_seen"), "expires_at": sa.bindparam("b_expires_at")}
        self.touch = sa.update(table).where(pk).values(times)
        self.delete = sa.delete(table).where(pk)
        self.list = sa.select(c.key, *meta).where(live)
        self.list_user = self.list.where(c.user == sa.bindparam("b_user"))
        self.count = sa.select(sa.func.count()).select_from(table).where(live)
        self.cleanup = _cleanup(table, prefix, dialect)
        if lock_table is not None:
            lc = lock_table.c
            held = sa.and_(lc.prefix == prefix, lc.key == sa.bindparam("b_key"))
            self.lock_insert = insert_if_absent(lock_table, dialect)
            self.lock_steal = (
                sa.update(lock_table)
                .where(held, lc.until <= sa.bindparam("b_now"))
                .values(token=sa.bindparam("b_token"), until=sa.bindparam("b_until"))
            )
            # Released locks keep their row, lapsed at once: deleting rows
            # that others are inserting deadlocks InnoDB; cleanup() removes them.
            self.unlock = (
                sa.update(lock_table)
                .where(held, lc.token == sa.bindparam("b_token"), lc.until > sa.bindparam("b_now"))
                .values(until=0.0)
            )
            self.lock_cleanup = sa.delete(lock_table).where(lc.prefix == prefix, lc.until <= sa.bindparam("b_now"))
