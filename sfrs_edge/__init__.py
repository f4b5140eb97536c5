"""sfrs-edge: visual place recognition on the device (SFRS: NetVLAD + PCA whitening).

The runtime package. It reads exported model files and maps; it never imports torch.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
