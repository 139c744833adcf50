"""A small page at `/` to try the service by hand: type a user id, see the titles.

Served with a Content-Security-Policy: its one script and one style block run by a nonce
drawn per answer, it may only call this origin, and no other page may frame it.
"""

from __future__ import annotations

import secrets

from flask import Blueprint, Response, render_template

bp = Blueprint("ui", __name__, template_folder="templates")

CSP = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
    "connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


@bp.get("/")
def index() -> Response:
    nonce = secrets.token_urlsafe(16)
    response = Response(render_template("index.html", nonce=nonce), mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP.format(nonce=nonce)
    return response
