"""How every ONNX Runtime session of the project is made: the options, defined once.

Callers: the batch scorer (batch/ranker/scorer.py: the train_ranker stage's parity checks
and the Spark scoring tasks of the rank stage), the service (online/scoring.py), the
tests and bench/reranker_latency.py. shared/ must not import onnxruntime, so the caller
passes the module in (`import onnxruntime as ort; create_session(ort, model)`), after the
fork where that matters (the service imports it in the gunicorn worker).

The options, and why:
- one intra-op and one inter-op thread, sequential execution: Spark runs one task per
  core and the service one worker per core; a session that spawned threads of its own
  would oversubscribe the machine (PITFALLS, Serving).
- spinning off, both pools: an idle pool thread must not burn a core waiting for work.
  Spinning is a thread-wait policy only: it never changes a score (with one thread the
  pools hold no worker at all); tests/rerank/test_onnx_session.py checks the scores are
  the same bits either way.
- CPU execution provider only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class SessionSettings:
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    sequential: bool = True
    allow_spinning: bool = False
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def config_entries(self) -> dict[str, str]:
        spin = "1" if self.allow_spinning else "0"
        return {"session.intra_op.allow_spinning": spin, "session.inter_op.allow_spinning": spin}


SETTINGS = SessionSettings()


def session_options(ort: ModuleType, settings: SessionSettings = SETTINGS,
                    profile_prefix: str | None = None) -> Any:
    """An ort.SessionOptions with `settings` applied; profiling on when profile_prefix is
    given (bench only)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = (ort.ExecutionMode.ORT_SEQUENTIAL if settings.sequential
                              else ort.ExecutionMode.ORT_PARALLEL)
    for key, value in settings.config_entries().items():
        options.add_session_config_entry(key, value)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def create_session(ort: ModuleType, model: str | Path | bytes,
                   settings: SessionSettings = SETTINGS,
                   profile_prefix: str | None = None) -> Any:
    """An ort.InferenceSession over a model file or the model's bytes, with `settings`."""
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, session_options(ort, settings, profile_prefix),
                                providers=list(settings.providers))
