"""Tests of keras_rest_api.web."""
