"""The model server in small parts: claiming, running the model, replying, heartbeats, one loop.

`ModelServer` (server.py) composes them; `main.py` is the daemon's entry point (`run_model_server.py`, the `keras-model-server` command).
"""
from keras_rest_api.model_server.claims import Claimer
from keras_rest_api.model_server.heartbeat import HeartbeatPublisher
from keras_rest_api.model_server.inference import BatchRunner, Outcome, top_predictions
from keras_rest_api.model_server.replies import Replier
from keras_rest_api.model_server.server import ModelServer

__all__ = ["BatchRunner", "Claimer", "HeartbeatPublisher", "ModelServer", "Outcome", "Replier", "top_predictions"]
