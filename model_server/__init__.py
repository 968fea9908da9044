"""The model server in small parts: claiming, running the model, replying, heartbeats, one loop.

`ModelServer` (server.py) composes them; `run_model_server.py` is the daemon's entry point.
"""
from model_server.claims import Claimer
from model_server.heartbeat import HeartbeatPublisher
from model_server.inference import BatchRunner, Outcome, top_predictions
from model_server.replies import Replier
from model_server.server import ModelServer

__all__ = ["BatchRunner", "Claimer", "HeartbeatPublisher", "ModelServer", "Outcome", "Replier", "top_predictions"]
