"""What both tiers share besides the queue: ids, server names and the log format (the tutorial's
helpers module; the code lives in keras_rest_api.ids and keras_rest_api.logs)."""
from keras_rest_api.ids import default_server_name, is_valid_job_id, is_valid_request_id, new_request_id
from keras_rest_api.logs import configure_logging

__all__ = ["configure_logging", "default_server_name", "is_valid_job_id", "is_valid_request_id", "new_request_id"]
