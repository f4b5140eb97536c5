"""sfrs-edge: visual place recognition on the device (SFRS: NetVLAD + PCA whitening).

The runtime package. It reads exported model files and maps; it never imports torch.
"""

from . import _opencv_limits  # noqa: F401  (must run before anything imports cv2)
from .version import __version__

__all__ = ["Engine", "LocalizationResult", "Localizer", "Map", "__version__"]

_LAZY = {
    "Engine": "sfrs_edge.engine",
    "Localizer": "sfrs_edge.localize",
    "LocalizationResult": "sfrs_edge.results",
    "Map": "sfrs_edge.maps",
}


def __getattr__(name: str):
    """``sfrs_edge.Localizer`` etc., imported on first use (``import sfrs_edge`` stays light)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sfrs_edge' has no attribute {name!r}")
