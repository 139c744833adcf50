"""A small page at `/` to try the service by hand: type a user id, see the titles."""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("ui", __name__, template_folder="templates")


@bp.get("/")
def index() -> str:
    return render_template("index.html")
