"""The queue between the tiers: its records (records), Redis access (jobs), and the Redis users
each tier connects as (redis_users)."""
from keras_rest_api.queue.jobs import JobQueue, QueueFull, queue_from_settings
from keras_rest_api.queue.records import Heartbeat, Job, Keys, ModelContract, RecordError, Result

__all__ = ["Heartbeat", "Job", "JobQueue", "Keys", "ModelContract", "QueueFull", "RecordError", "Result",
           "queue_from_settings"]
