"""The atomic steps of the queue protocol, as a Redis function library (Redis 7 functions).

Neither tier's Redis user may run a script of its own (no EVAL, EVALSHA, SCRIPT, FUNCTION): a
script it could load could also loop forever and make Redis answer BUSY to everyone. What must
be atomic is this library, loaded once by the admin user when Redis starts (`load_functions`;
run.sh and the test harness do it, `keras-rest-api-redis-users functions` for a Redis of your
own) and called by each tier with FCALL, on its own keys only (see redis_users.acl_rules).

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
# Answer and acknowledge each entry that the replying consumer still holds, in one atomic step;
# skip the others: another server took it over (it answers) or already answered it. So a job run
# twice (a takeover of a batch that was slow, not dead; a lost acknowledgement) is answered once.
# keys: the stream, then one result key per entry (the stream again for an entry acknowledged
# without an answer). args: group, consumer, TTL in ms, then per entry: its id and the answer
# ("" for none). Returns how many entries were answered or acknowledged.
REPLY = "kras_reply_1"
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
redis.register_function('{REPLY}', function(keys, args)
    local stream, group, consumer, ttl = keys[1], args[1], args[2], args[3]
    local done = 0
    for i = 2, #keys do
        local id, answer = args[2 + (i - 1) * 2], args[3 + (i - 1) * 2]
        local held = redis.call('XPENDING', stream, group, id, id, 1)[1]
        if held and held[2] == consumer then
            if answer ~= '' then
                redis.call('RPUSH', keys[i], answer)
                redis.call('PEXPIRE', keys[i], ttl)
            end
            redis.call('XACK', stream, group, id)
            redis.call('XDEL', stream, id)
            done = done + 1
        end
    end
    return done
end)
"""


def load_functions(connection: redis.Redis) -> None:
    """Load (or reload) the library on the Redis of `connection`: a user allowed FUNCTION LOAD (admin)."""
    connection.function_load(SOURCE, replace=True)
