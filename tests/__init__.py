"""The tests: unit/ mirrors the keras_rest_api package, system/ runs the service as processes,
support/ holds what both share (the process harness, fixtures, generated inputs)."""
