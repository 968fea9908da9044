#!/usr/bin/env python
"""Load client for the service's POST /predict: `python stress_test.py --image dog.jpg` floods it
as the tutorial's script did, and counts what happened (see --help; the code is keras_rest_api.stress,
also installed as the `keras-stress-test` command)."""
import sys

from keras_rest_api.stress import main

if __name__ == "__main__":
    sys.exit(main())
