"""The product's one error vocabulary: every error it raises on purpose is a RecsysError.

Each class carries the message a user can act on and the exit code `recsys` leaves with
when it ends a command, so a scheduler can branch on the code instead of on message text
(the nightly DAG fails a quality-gate verdict at once, without retries, on
`QualityGateFailed.exit_code`).

| exit code | class | meaning |
|---|---|---|
| 1 | RecsysError (and any subclass below without its own) | the command failed; see its `error:` line |
| 2 | UsageError | bad arguments or settings (ExperimentsError: a bad experiments file) |
| 3 | QualityGateFailed | the run's metrics are not good enough to publish (a verdict: do not retry) |
| 4 | DataContractError | the input files do not follow the data contract |
| 5 | QuarantineThresholdExceeded | too many input rows failed validation |
| 6 | BundleError | a bundle is missing, incomplete or fails its checks |
| 7 | StageFailed | a stage run as a child process failed (the orchestrator's view) |
| 8 | WarehouseUnavailable | the warehouse file is missing or another process holds it (nothing was done; a later try may succeed) |
| 9 | InputDriftFailed | an input drift check whose action is `fail` breached: the run stops before publish (a verdict: do not retry) |
| 10 | RolloutCheckFailed | `recsys rollout check` could not measure the canary (warehouse, bundle or log unreadable): nothing was decided; retry (a rollback it decides is a success, exit 0) |

Every `recsys` command ends a RecsysError the same way (shared/cli_errors.py): `error:
<message>` on stderr, then this exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class RecsysError(Exception):
    """Base class for every error the product raises on purpose."""

    exit_code: int = 1


class UsageError(RecsysError):
    """Bad command-line arguments or settings."""

    exit_code = 2


class ExperimentsError(UsageError):
    """An experiments file (ART/experiments.json) that fails validation, or a forced arm
    that names no running experiment's arm; the message names the field."""


class QualityGateFailed(RecsysError):
    """The run's metrics are not good enough to publish."""

    exit_code = 3


class DataContractError(RecsysError):
    """Input files do not follow the data contract (missing file or column)."""

    exit_code = 4


class QuarantineThresholdExceeded(RecsysError):
    """Too large a share of the input rows failed validation."""

    exit_code = 5


class BundleError(RecsysError):
    """A bundle is missing, incomplete, fails its checksums or its content checks."""

    exit_code = 6


class WarehouseUnavailable(RecsysError):
    """The warehouse file is missing (nothing published yet) or another process holds it."""

    exit_code = 8


class InputDriftFailed(RecsysError):
    """An input drift check set to `fail` breached (docs/monitoring.md): stopped before publish."""

    exit_code = 9


class RolloutCheckFailed(RecsysError):
    """The canary's guardrail check could not run (docs/experiments.md, "Canary rollouts").
    Its own code, so a scheduler retries it and pages; a rollback it decided is exit 0."""

    exit_code = 10


class ModelError(RecsysError):
    """The re-ranker failed on a request; the caller falls back to the precomputed list."""


class ApiError(RecsysError):
    """A request the service refuses: an HTTP status, a message and the field at fault."""

    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.field = status, error, field


class StageFailed(RecsysError):
    """A stage run as a child process (`recsys batch stage ...`) exited non-zero; the message
    carries the stage's own last words and `returncode` its exit code (see the table)."""

    exit_code = 7

    def __init__(self, stage: str, returncode: int, output: Sequence[str]) -> None:
        self.stage = stage
        self.returncode = returncode
        self.output = list(output)
        self.reason = reason_from_output(output)
        super().__init__(f"stage {stage} failed (exit {returncode}): {self.reason}")


def reason_from_output(output: Sequence[str]) -> str:
    """The most telling line: the CLI's `error: msg` (or a `...Error: msg` traceback line),
    else the last lines."""
    for line in reversed(output):
        low = line.lower()
        if "error:" in low or "failed:" in low:
            return line.strip()
    tail = [line.strip() for line in output if line.strip()][-3:]
    return " | ".join(tail) or "no output"


EXIT_CODES: dict[str, int] = {
    cls.__name__: cls.exit_code
    for cls in (RecsysError, UsageError, QualityGateFailed, DataContractError,
                QuarantineThresholdExceeded, BundleError, StageFailed, WarehouseUnavailable,
                InputDriftFailed, RolloutCheckFailed)
}


def exit_code_of(exc: BaseException) -> int:
    """The exit code a command ends with for this error (1 for anything not a RecsysError)."""
    return exc.exit_code if isinstance(exc, RecsysError) else 1
