"""The default store: sessions in one SQLite file (``store``), its file and connections in ``connections``."""

from __future__ import annotations

from .store import SQLiteStore as SQLiteStore

__all__ = ["SQLiteStore"]
