"""Tests of keras_rest_api.model_server."""
