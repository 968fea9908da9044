"""Keras REST API: image classification behind Apache + mod_wsgi, Redis Streams and batching model servers.

Subpackages, one per concern: `web` (the Flask app), `queue` (records and Redis between the
tiers), `imaging` (uploads to a model's pixels), `models` (model configs, loading, built-in
models), `model_server` (the batching daemon); `errors` holds every error with its HTTP status
and `settings` every setting. Nothing is imported here: the web tier must never pay for Keras.
"""
__all__: list[str] = []
