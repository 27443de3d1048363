"""imgrestore: restore photos with lightweight neural networks on the CPU.

    >>> import imgrestore
    >>> up = imgrestore.load("upscale-x4")
    >>> big = up(pil_image)          # or a uint8/uint16 numpy array
"""

from __future__ import annotations

from .errors import (ExportError, ImgRestoreError, InputError, ModelNotFound, NameCollision, OutputError, OutputExists,
                     UnknownTask, WeightsError, WrongTask)

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
    "UnknownTask",
    "WrongTask",
    "ExportError",
    "NameCollision",
    "__version__",
]


def __getattr__(name):
    # torch is imported on first use, so `import imgrestore` and the CLI's
    # --help stay fast
    if name == "load":
        from .tasks import load

        return load
    if name == "Restorer":
        from .restorer import Restorer

        return Restorer
    raise AttributeError(name)
