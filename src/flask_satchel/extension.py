"""``Session(app)``: installs Flask-Satchel on an app."""

from __future__ import annotations

import typing as t

from . import settings as _settings
from .cli import session_cli
from .errors import ConfigError, StoreUnavailable
from .interface import SatchelSessionInterface
from .locking import release_after_request
from .manager import SessionManager
from .stores import missing_extra, open_store
from .stores.base import LockingStore

if t.TYPE_CHECKING:
    from flask import Flask

    from .base_interface import BaseSessionInterface
    from .stores.base import Store


def _traced(app: Flask, store: Store) -> Store:
    """``store`` with its operations traced and timed when OpenTelemetry's API is installed (the ``otel`` extra)."""
    try:
        from .telemetry import count_lifecycle, traced
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] != "opentelemetry":
            raise
        return store
    wrapped = traced(store)
    count_lifecycle(app, wrapped.attributes)
    return t.cast("Store", wrapped)


class Session:
    """The Flask-Satchel extension; a drop-in for Flask-Session's ``Session``.

    ``Session(app)`` or, with an app factory, ``Session().init_app(app)``.
    Nothing app-specific is kept on this object: the store, settings and the
    :class:`~flask_satchel.manager.SessionManager` live in
    ``app.extensions["satchel"]``.
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> SessionManager:
        """Read the config once, open the store and take over ``app.session_interface``."""
        settings = _settings.load(app.config, app.instance_path, app.extensions)
        if settings.type == "cookie":
            return self._init_cookie_mode(app, settings)
        with app.app_context():  # a Flask-SQLAlchemy ``db`` needs one to hand out its engine
            store = _traced(app, open_store(settings.store))
        if settings.store.locking and not isinstance(store, LockingStore):
            raise ConfigError("SESSION_LOCKING", f"the {settings.type} store cannot lock sessions")
        interface = SatchelSessionInterface(settings, store)
        if settings.migrate_flask_session:
            from .legacy import open_importer

            try:
                interface.importer = open_importer(settings, app, store)
            except BaseException:
                store.close()  # a ConfigError: the app will not start, so nothing may keep the store's connections
                raise
        return self._install(app, interface, SessionManager(settings, store, interface, app))

    def _init_cookie_mode(self, app: Flask, settings: _settings.Settings) -> SessionManager:
        """``SESSION_TYPE = "cookie"``: no session store, only the revocation marks' one if configured."""
        if settings.migrate_flask_session:
            from .legacy import check_importable

            check_importable(settings, app)  # Flask-Session has no cookie mode: a ConfigError
        try:  # cryptography is an optional extra
            from .cookie import CookieSessionInterface, Revocations
        except ModuleNotFoundError as e:
            config_error = missing_extra(e, settings.store)
            if config_error is None:
                raise
            raise config_error from None
        marks = None
        if settings.revocations is not None:
            try:
                marks = open_store(settings.revocations)
            except ConfigError as e:
                raise ConfigError("SESSION_COOKIE_REVOCATION_URL", str(e)) from None
        revocations = Revocations(marks)
        interface = CookieSessionInterface(settings, revocations)
        manager = SessionManager(settings, None, interface, app, revocations=revocations)
        return self._install(app, interface, manager)

    @staticmethod
    def _install(app: Flask, interface: BaseSessionInterface, manager: SessionManager) -> SessionManager:
        settings = manager.settings
        app.session_interface = interface
        app.extensions["satchel"] = manager
        app.register_error_handler(StoreUnavailable, interface.outages.handler)
        if settings.store.locking:
            app.teardown_request(release_after_request)
        app.cli.add_command(session_cli)
        return manager
