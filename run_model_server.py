"""The model server daemon: `python run_model_server.py` (settings from the environment, e.g.
MODEL=resnet50). It loads the models, takes queued images in batches and answers each one; see
keras_rest_api.model_server."""
import sys

from keras_rest_api.model_server.main import main

if __name__ == "__main__":
    sys.exit(main())
