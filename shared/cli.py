"""The `recsys` command line.

The root app lives here; each side of the product adds its own commands through the
`recsys.commands` entry point group (see pyproject.toml). An install without the batch
extra therefore still gets `recsys serve`, `recsys sql`, `recsys warehouse` and
`recsys experiment` and `recsys rollout start|status|abort`, and this module never imports batch/ or online/ directly. Any command ending on a RecsysError
prints `error: <message>` and exits with the error's code (shared/errors.py).
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points

import typer

from shared.cli_errors import RecsysGroup
from shared.experiments_cli import register as register_experiments
from shared.rollout_cli import register as register_rollout
from shared.warehouse_cli import register as register_warehouse

app = typer.Typer(
    cls=RecsysGroup,
    help="Hybrid batch + online recommender: nightly Spark pipeline, FAISS, ONNX re-ranker, "
    "Flask service, DuckDB warehouse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Hybrid batch + online recommender."""


def _load_plugins() -> None:
    register_warehouse(app)
    # Before the plugins: one of them may add a subcommand (report) to `recsys experiment`.
    register_experiments(app)
    register_rollout(app)  # likewise: the batch side adds `promote` and `check` to it
    for ep in sorted(entry_points(group="recsys.commands"), key=lambda e: e.name):
        try:
            ep.load()(app)
        except ImportError as exc:  # that side of the product is not installed
            logging.getLogger(__name__).debug("command group %s unavailable: %s", ep.name, exc)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # FAISS logs every CPU-specific build it tries at import; only failures are news.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    _load_plugins()
    app()


if __name__ == "__main__":
    main()
