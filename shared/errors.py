"""Domain exceptions: each carries a message a user can act on."""


class RecsysError(Exception):
    """Base class for every error the product raises on purpose."""


class DataContractError(RecsysError):
    """Input files do not follow the data contract (missing file or column)."""


class QuarantineThresholdExceeded(RecsysError):
    """Too large a share of the input rows failed validation."""


class QualityGateFailed(RecsysError):
    """The run's metrics are not good enough to publish."""


class BundleError(RecsysError):
    """A bundle is missing, incomplete or fails its checksums."""
