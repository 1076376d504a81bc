"""The Redis store's Lua scripts: each compares and writes in one step on the server.

They are sent by SHA (``EVALSHA``) and loaded only when a server answers
that it does not know them (first use, a restart, a failover). Not with
redis-py's ``register_script``: in a pipeline (a login's index commands go
with the script) it asks ``SCRIPT EXISTS`` first, a round trip more, and a
cluster pipeline refuses its ``evalsha()`` method (though not the command
sent with ``execute_command``).
"""

from __future__ import annotations

import hashlib
import typing as t

from redis.exceptions import NoScriptError


class Script:
    """A Lua script and its SHA1, which is how Redis names a loaded script."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def call(self, send: t.Callable[[str], t.Any], load: t.Callable[[str], object]) -> t.Any:
        """``send(sha)``'s reply; when the server does not know the script, ``load(source)`` it and send again.

        ``send`` runs ``EVALSHA`` (alone, or in a pipeline with the commands
        that go in the same round trip); ``load`` runs ``SCRIPT LOAD``, on
        every master of a cluster.
        """
        try:
            return send(self.sha)
        except NoScriptError:
            load(self.source)
            return send(self.sha)


#: KEYS[1] the session; ARGV[1] the value the change was computed from,
#: ARGV[2] the new value ("" deletes), ARGV[3] its expiry in ms.
#: Returns 1 when written; else what is there now: nil when the session is
#: gone, or the value another request wrote since, to merge into again.
COMPARE_AND_SET = Script("""
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then return current end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end
return 1
""")

#: KEYS[1] a session's lock; ARGV[1] the holder's token. 1 if released.
UNLOCK = Script("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
""")
