"""WSGI entry point that Apache's mod_wsgi loads (see apache/ and deploy/)."""
# The package comes from the venv (pip install) or, in a checkout, from this script's folder,
# which apache/serve.sh and the vhost put on mod_wsgi's python-path.
from keras_rest_api.wsgi import load_application

application = load_application()
