"""The service's settings, each overridable by an environment variable of the same name.

Every setting, its default and its meaning: keras_rest_api/settings.py. Imported, this module
holds each one as read from the environment now (`settings.REDIS_URL`, ...); run, it prints
them as shell assignments for the run scripts (`eval "$(python settings.py)"`), secrets left out.
"""
import sys

from keras_rest_api.settings import load, main

if __name__ == "__main__":
    sys.exit(main())
globals().update(load())
