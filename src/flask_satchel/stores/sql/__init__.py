"""Sessions in a table of PostgreSQL, MariaDB/MySQL or SQLite, through SQLAlchemy Core.

One job per module:

- ``store``: ``SQLStore``, the Store protocol on one table, every statement
  through SQLAlchemy's ``Connection`` (so the engine's events see them);
- ``changes``: a change as one compare-and-set statement, else under the
  row lock;
- ``statements``: the Core statements, built once per store;
- ``schema``: the tables, their creation, and the check that a table of
  that name is the store's, at startup or on first use;
- ``engines``: an engine from ``SESSION_URL`` with every wait bounded, or
  the app's own from ``SESSION_SQLALCHEMY``;
- ``connections``: work on the pool's connections, retried once after a
  dead one, with its errors as the store's;
- ``kept``: each thread's kept connection, on an engine the store made;
- ``locks``: ``SESSION_LOCKING``'s leases, in ``<table>_locks``;
- ``errors``: what each database's errors mean for a session store;
- ``limits``: sessions too large for the database (MySQL's
  ``max_allowed_packet``).
"""

from __future__ import annotations

from .connections import RETRY_WITHIN
from .schema import DEFAULT_TABLE, make_lock_table, make_table
from .statements import CLEANUP_BATCH
from .store import SQLStore

__all__ = ["CLEANUP_BATCH", "DEFAULT_TABLE", "RETRY_WITHIN", "SQLStore", "make_lock_table", "make_table"]
