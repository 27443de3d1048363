"""Typed exceptions. The library raises these; only the CLI prints."""

from __future__ import annotations


class ImgRestoreError(Exception):
    """Base class of every error imgrestore raises on purpose."""


class InputError(ImgRestoreError):
    """Raised when an input image cannot be read or decoded (not an image,
    truncated, zero bytes, unreadable, over the pixel limit)."""


class OutputError(ImgRestoreError):
    """Raised when an output cannot be written (unwritable folder, encoder
    failure)."""


class WeightsError(ImgRestoreError):
    """Raised when a weights file is missing, damaged, of an unknown
    architecture, or does not match the architecture its metadata names."""


class ModelNotFound(ImgRestoreError):
    """Raised when a model name is neither a shipped model nor a file."""


class OutputExists(OutputError):
    """Raised when the output name is already taken (and overwriting was not
    asked for), including by a concurrent run that finished it first."""


class UnknownTask(WeightsError):
    """Raised when a weights file's task is not one this version performs
    (`tasks.TASKS`): never run as another task."""


class WrongTask(WeightsError):
    """Raised when a model of one task is given where another task's model
    was asked for (an upscaler to colorize, say)."""


class ExportError(ImgRestoreError):
    """Raised when a model cannot be exported: its task has no exported
    network, the optional `[onnx]` extra is not installed, int8 was asked
    for without calibration images, or the exported graph does not
    reproduce the PyTorch network."""


class NameCollision(ImgRestoreError):
    """Raised before any work when two inputs of one batch would be written
    to the same output name (a.png and a.bmp -> a_x2.png), or when an output
    would replace another input of the same batch (with overwrite)."""
