"""imgrestore: restore photos with lightweight neural networks on the CPU.

    >>> import imgrestore
    >>> up = imgrestore.load("upscale-x4")
    >>> big = up(pil_image)          # or a uint8/uint16 numpy array
"""

from __future__ import annotations

from .errors import (ImgRestoreError, InputError, ModelNotFound, OutputError, OutputExists,
                     WeightsError)

__version__ = "0.1.0"
__all__ = [
    "load",
    "Restorer",
    "ImgRestoreError",
    "InputError",
    "OutputError",
    "OutputExists",
    "WeightsError",
    "ModelNotFound",
    "__version__",
]


def __getattr__(name):
    # torch is imported on first use, so `import imgrestore` and the CLI's
    # --help stay fast
    if name in ("load", "Restorer"):
        from . import restorer

        return getattr(restorer, name)
    raise AttributeError(name)
