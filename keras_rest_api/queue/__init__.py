"""The queue between the tiers: its records (records), Redis access (jobs), and the Redis users
each tier connects as (redis_users).

Only the records are re-exported: importing jobs here would import redis_users before
`python -m keras_rest_api.queue.redis_users` (run.sh's tool) runs it, which Python warns about."""
from keras_rest_api.queue.records import Heartbeat, Job, Keys, ModelContract, RecordError, Result

__all__ = ["Heartbeat", "Job", "Keys", "ModelContract", "RecordError", "Result"]
