"""The Python API a distributed engine maps over batches."""

from __future__ import annotations

import numpy as np
from PIL import Image

import imgrestore
from conftest import noise_image


def test_numpy_and_pil(tiny_x2):
    up = imgrestore.load(tiny_x2, device="cpu")
    a = np.asarray(noise_image(5, 7))
    out = up(a)
    assert out.shape == (10, 14, 3) and out.dtype == np.uint8
    gray = up(np.zeros((4, 4), np.uint16))
    assert gray.shape == (8, 8) and gray.dtype == np.uint16
    rgba = up(np.zeros((4, 4, 4), np.uint8))
    assert rgba.shape == (8, 8, 4)
    im = up(noise_image(5, 7, "RGBA"))
    assert isinstance(im, Image.Image) and im.mode == "RGBA" and im.size == (14, 10)


def test_batch_map_like_an_engine(tiny_x2):
    """Ray Data / Dask map a function over batches of arrays; this is that
    function, run locally."""
    up = imgrestore.load(tiny_x2, device="cpu")

    def upscale_batch(batch: dict) -> dict:
        return {"image": [up(img) for img in batch["image"]]}

    batch = {"image": [np.asarray(noise_image(4, 6, seed=i)) for i in range(3)]}
    out = upscale_batch(batch)
    assert [o.shape for o in out["image"]] == [(8, 12, 3)] * 3


def test_every_public_error_is_exported():
    """A caller catches what the API raises by the package's own names
    (NameCollision was raised but not exported)."""
    import inspect

    from imgrestore import errors

    raised = {n for n, c in vars(errors).items()
              if inspect.isclass(c) and issubclass(c, errors.ImgRestoreError) and not n.startswith("_")}
    assert raised <= set(imgrestore.__all__)
    for n in raised:
        assert getattr(imgrestore, n) is getattr(errors, n)
