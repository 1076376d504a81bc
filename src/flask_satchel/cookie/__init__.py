"""The encrypted cookie mode: the session travels in its cookie, sealed, and no store keeps it."""

from .interface import CookieSessionInterface as CookieSessionInterface
from .revocations import Revocations as Revocations
from .sealer import Sealed as Sealed
from .sealer import Sealer as Sealer
