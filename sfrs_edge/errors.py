"""Exceptions with messages a user can act on. The CLI turns them into exit code 1."""


class SfrsEdgeError(Exception):
    """Base class for every error sfrs-edge reports to a user."""


class ImageError(SfrsEdgeError):
    """An image file cannot be used (missing, empty, corrupt, unsupported, too small or large)."""


class ModelError(SfrsEdgeError):
    """A model file (checkpoint, ONNX, engine) is missing, corrupt or incompatible."""


class MapError(SfrsEdgeError):
    """A map directory is missing, corrupt, or was built by a different model."""


class ConfigError(SfrsEdgeError):
    """An option or input file has a value that cannot work."""


class TrainingError(SfrsEdgeError):
    """Training cannot produce a usable model (every epoch diverged or collapsed)."""
