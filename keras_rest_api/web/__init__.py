"""The web tier: the Flask app (app.create_app), its routes (predict: /predict and friends; v2:
the Open Inference Protocol; page: the pages) over one data plane (dataplane), and what guards
them (auth, limits, multipart, errors, metrics)."""
from keras_rest_api.web.app import create_app

__all__ = ["create_app"]
