"""Flask-Satchel: Flask's ``session``, kept on the server and done right."""

from .errors import ConfigError as ConfigError
from .errors import NotSupported as NotSupported
from .errors import SatchelError as SatchelError
from .errors import SerializationError as SerializationError
from .errors import SessionTooLarge as SessionTooLarge
from .errors import StoreUnavailable as StoreUnavailable
from .errors import TooManySessions as TooManySessions
from .extension import Session as Session
from .manager import SessionInfo as SessionInfo
from .manager import SessionManager as SessionManager
from .manager import Stats as Stats
from .session import ServerSession as ServerSession
