"""The atomic steps of the queue protocol, as a Redis function library (Redis 7 functions).

The web tier's Redis user may run no script of its own (no EVAL, EVALSHA, SCRIPT, FUNCTION): a
script it could load could also loop forever and make Redis answer BUSY to everyone. What must
be atomic is this library, loaded once by the admin user when Redis starts (`load_functions`;
run.sh and the test harness do it, `keras-rest-api-redis-users functions` for a Redis of your
own) and called by the web tier with FCALL, on its own keys only (see redis_users.acl_rules).

The library's name carries its version, so a newer release loads beside an older one still
serving, and never replaces it under a running tier.
"""
from __future__ import annotations

import redis

LIBRARY = "kras_queue_1"
# Atomic "append unless full": a check then an XADD from the client could overshoot the bound
# under concurrency. keys: the stream, the job's pending marker; args: the bound, the marker's
# TTL in ms (0: no marker), the marker's value, then the entry's field-value pairs. Returns the
# new entry id, or nil when the queue is full.
SUBMIT = "kras_submit_1"
SOURCE = f"""#!lua name={LIBRARY}
redis.register_function('{SUBMIT}', function(keys, args)
    if redis.call('XLEN', keys[1]) >= tonumber(args[1]) then
        return false
    end
    if tonumber(args[2]) > 0 then
        redis.call('SET', keys[2], args[3], 'PX', args[2])
    end
    return redis.call('XADD', keys[1], '*', unpack(args, 4))
end)
"""


def load_functions(connection: redis.Redis) -> None:
    """Load (or reload) the library on the Redis of `connection`: a user allowed FUNCTION LOAD (admin)."""
    connection.function_load(SOURCE, replace=True)
