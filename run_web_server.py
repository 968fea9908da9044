"""The web tier on gevent's development server: `python run_web_server.py` (HOST, PORT from the
environment). Production: Apache + mod_wsgi (`./run.sh`, apache/, keras_rest_api_app.wsgi).
The app itself is keras_rest_api.web."""
import sys

from keras_rest_api.web.devserver import main

if __name__ == "__main__":
    sys.exit(main())
