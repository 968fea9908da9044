"""The pages for people: GET / (pick or drop a photo, see its top-5 labels) and GET /docs
(Swagger UI over /openapi.json). Plain HTML, CSS and JavaScript shipped in the package (web/static/), and Swagger
UI's own files from the flask-swagger-ui package: nothing is loaded from another site, so the
pages work offline.

GET / answers the service's JSON description (also at GET /api) to clients that do not ask for
HTML, so `curl http://HOST/` still gets JSON.

When API keys are configured, the pages' files (and /openapi.json, which Swagger UI renders) are
served without a key: they are the same for everyone and hold no data. The page then asks its
user for a key when a call answers 401, and Swagger UI's Authorize button takes one; every route
with data still needs it. The JSON description at / needs a key like /api.
"""
from __future__ import annotations

import os
from importlib import resources

from flask import Blueprint, Flask, Response, current_app, request, send_from_directory

from keras_rest_api.web import auth

# The package's own files (installed with it as package data): a folder on disk in a checkout,
# a wheel's install or a container.
STATIC_DIR = str(resources.files("keras_rest_api.web").joinpath("static"))

# Everything from this origin, no inline script or style (the pages have none), no framing.
# blob: lets the page preview the photo the person picked without uploading it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _swagger_ui_dir() -> str:
    import flask_swagger_ui

    return os.path.join(os.path.dirname(flask_swagger_ui.__file__), "dist")


def home() -> Response:
    # The answer (and whether it needs a key) depends on Accept: caches must keep them apart.
    if not _wants_html():
        response = current_app.make_response(current_app.view_functions["index"]())
    else:
        response = send_from_directory(STATIC_DIR, "index.html", max_age=0)
    response.vary.add("Accept")
    return response


def _wants_html() -> bool:
    # Browsers name text/html; curl (*/*), scripts and tests without Accept get the JSON.
    return any(mimetype == "text/html" for mimetype, _ in request.accept_mimetypes)


def docs() -> Response:
    return send_from_directory(STATIC_DIR, "docs.html", max_age=0)


def docs_asset(filename: str) -> Response:
    return send_from_directory(_swagger_ui_dir(), filename, max_age=3600)


def _secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def register(app: Flask) -> None:
    """Add GET /, /docs and the pages' files (/ui/..., /docs/assets/...) to `app`."""
    page = Blueprint("page", __name__, static_folder=STATIC_DIR, static_url_path="/ui")
    page.add_url_rule("/", view_func=home, methods=["GET"])
    page.add_url_rule("/docs", view_func=docs, methods=["GET"])
    page.add_url_rule("/docs/assets/<path:filename>", view_func=docs_asset, methods=["GET"])
    page.after_request(_secure)
    app.register_blueprint(page)
    # Public: a browser must load these before the page can ask for a key (see the docstring).
    auth.allow_without_key(app, "page.home", when=_wants_html)
    for endpoint in ("page.docs", "page.docs_asset", "page.static", "openapi_document"):
        auth.allow_without_key(app, endpoint)

