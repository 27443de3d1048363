"""Reading and writing: orientation, metadata, bit depth, modes, limits."""

from __future__ import annotations

import io as _io

import numpy as np
import pytest
from PIL import Image, ImageCms

from conftest import noise_image, tiff16
from imgrestore import InputError, OutputError
from imgrestore import io as imgio


def _decode(im: Image.Image, fmt: str = "PNG", **kw) -> imgio.Picture:
    buf = _io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return imgio.decode(buf.getvalue())


def test_exif_orientation_applied_and_reset():
    im = noise_image(10, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    exif[0x010F] = "TestCam"
    pic = _decode(im, "JPEG", exif=exif.tobytes(), quality=95)
    assert pic.size == (10, 20)  # width and height swapped
    out = Image.open(_io.BytesIO(imgio.encode(pic, "jpg")))
    ex = out.getexif()
    assert ex.get(0x0112) == 1 and ex.get(0x010F) == "TestCam"


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_icc_and_exif_carried(fmt):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    pic = _decode(noise_image(12, 12), "PNG", icc_profile=icc, exif=exif.tobytes())
    assert pic.icc == icc
    out = Image.open(_io.BytesIO(imgio.encode(pic, fmt)))
    assert out.info.get("icc_profile") == icc
    assert out.getexif().get(0x010F) == "TestCam"


def test_16bit_rgb_png_keeps_depth_and_icc():
    import cv2

    a = np.random.default_rng(0).integers(0, 65535, (9, 7, 3)).astype(np.uint16)
    ok, buf = cv2.imencode(".png", a[..., ::-1])
    pic = imgio.decode(buf.tobytes())
    assert pic.pixels.dtype == np.uint16 and pic.pixels.shape == (9, 7, 3)
    assert np.array_equal(pic.pixels, a)
    pic.icc = b"fake-icc-profile"
    back = imgio.decode(imgio.encode(pic, "png"))
    assert np.array_equal(back.pixels, a) and back.icc == b"fake-icc-profile"


def test_16bit_gray_png():
    a = np.random.default_rng(0).integers(0, 65535, (9, 7)).astype(np.uint16)
    pic = _decode(Image.fromarray(a))
    assert pic.gray and pic.pixels.dtype == np.uint16 and np.array_equal(pic.pixels[..., 0], a)
    back = imgio.decode(imgio.encode(pic, "png"))
    assert np.array_equal(back.pixels[..., 0], a)


def test_modes_palette_cmyk_gray_alpha():
    pal = noise_image(8, 8).convert("P")
    pal.putpixel((0, 0), 0)  # palette index 0, declared transparent, is used
    pal.info["transparency"] = 0
    p = _decode(pal)
    assert p.pixels.shape[2] == 3 and p.alpha is not None
    assert np.array_equal(p.alpha == 0, np.asarray(pal) == 0)  # transparent exactly where index 0 is
    cmyk = _decode(noise_image(8, 8).convert("CMYK"), "JPEG")
    assert cmyk.pixels.shape == (8, 8, 3) and any("CMYK" in n for n in cmyk.notes)
    g = _decode(noise_image(8, 8, "L"))
    assert g.gray and g.alpha is None
    rgba = _decode(noise_image(8, 8, "RGBA"))
    assert rgba.pixels.shape == (8, 8, 3) and rgba.alpha.shape == (8, 8)
    opaque = noise_image(8, 8).convert("RGBA")
    assert _decode(opaque).alpha is None  # an all-opaque alpha is not carried


def test_animated_gif_first_frame_with_note():
    frames = [noise_image(6, 6, seed=i).convert("P") for i in range(3)]
    buf = _io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    pic = imgio.decode(buf.getvalue())
    assert pic.size == (6, 6) and any("first frame" in n for n in pic.notes)


def test_bad_inputs_have_reasons():
    with pytest.raises(InputError, match="not an image"):
        imgio.decode(b"hello world, this is text")
    buf = _io.BytesIO()
    noise_image(64, 64).save(buf, format="JPEG")
    with pytest.raises(InputError, match="damaged|truncated"):
        imgio.decode(buf.getvalue()[:600])
    buf = _io.BytesIO()
    noise_image(100, 100).save(buf, format="PNG")
    with pytest.raises(InputError, match="pixel limit"):
        imgio.decode(buf.getvalue(), max_pixels=5000)


def test_write_atomic_never_clobbers(tmp_path):
    out = tmp_path / "o.png"
    imgio.write_atomic(b"first", out, overwrite=False)
    with pytest.raises(OutputError, match="already exists"):
        imgio.write_atomic(b"second", out, overwrite=False)
    assert out.read_bytes() == b"first"
    imgio.write_atomic(b"third", out, overwrite=True)
    assert out.read_bytes() == b"third"
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]  # no temporary left


def test_unwritable_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os

        if os.geteuid() == 0:
            pytest.skip("root can write anywhere")
        with pytest.raises(OutputError, match="cannot write"):
            imgio.write_atomic(b"x", ro / "o.png", overwrite=False)
    finally:
        ro.chmod(0o700)


def test_find_inputs_and_shard(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.png", "b.jpg", "sub/c.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    flat = imgio.find_inputs([str(tmp_path)])
    assert [j.rel.as_posix() for j in flat] == ["a.png", "b.jpg"]
    deep = imgio.find_inputs([str(tmp_path)], recursive=True)
    assert [j.rel.as_posix() for j in deep] == ["a.png", "b.jpg", "sub/c.png"]
    missing = imgio.find_inputs([str(tmp_path / "nope.png")])
    assert missing[0].error == "no such file or folder"
    many = [imgio.Job(tmp_path / f"{i}.png", imgio.Path(f"{i}.png")) for i in range(200)]
    parts = [imgio.shard(many, k, 4) for k in range(1, 5)]
    assert sorted(j.rel for p in parts for j in p) == sorted(j.rel for j in many)
    assert all(20 < len(p) < 80 for p in parts)
    assert imgio.shard(list(reversed(many)), 2, 4) == list(reversed(parts[1]))


@pytest.mark.parametrize("channels,bits", [(1, 8), (2, 8), (3, 8), (4, 8), (1, 16), (3, 16), (4, 16)])
def test_png_stream_roundtrip(channels, bits):
    dtype = np.uint16 if bits == 16 else np.uint8
    a = np.random.default_rng(channels).integers(0, 2**bits, (70, 23, channels)).astype(dtype)
    a[:, :, 0] = np.arange(23, dtype=dtype)[None] * 7  # structure the filters can use
    buf = _io.BytesIO()
    png = imgio.PngStream(buf, 23, 70, channels, bits, icc=b"profile", exif=None)
    for i in range(0, 70, 30):
        png.write(a[i:i + 30])
    png.close()
    pic = imgio.decode(buf.getvalue())
    back = pic.pixels if pic.alpha is None else np.dstack([pic.pixels, pic.alpha])
    if channels in (2, 4) and pic.alpha is None:  # a fully opaque alpha is not carried
        back = np.dstack([back, np.full(back.shape[:2], 2**bits - 1, dtype)])
    assert np.array_equal(back, a)


def test_png_stream_refuses_short_image():
    png = imgio.PngStream(_io.BytesIO(), 4, 4, 3, 8)
    png.write(np.zeros((2, 4, 3), np.uint8))
    with pytest.raises(OutputError, match="2 of 4 rows"):
        png.close()


def test_interrupted_write_leaves_nothing(tmp_path):
    def writer(f):
        f.write(b"half an image")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        imgio.write_atomic(writer, tmp_path / "o.png", overwrite=False)
    assert list(tmp_path.iterdir()) == []


def _photo_like(h: int, w: int, c: int = 3, seed: int = 0, deep: bool = False) -> np.ndarray:
    """Smooth random pixels plus a little grain: compressible as a photo is."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 8 + 1, w // 8 + 1, c)).astype(np.float32)
    planes = [np.asarray(Image.fromarray(small[..., i], "F").resize((w, h), Image.BILINEAR)) for i in range(c)]
    a = np.stack(planes, axis=-1) + rng.normal(0.0, 0.01, (h, w, c)).astype(np.float32)
    top = 65535 if deep else 255
    return (np.clip(a, 0, 1) * top + 0.5).astype(np.uint16 if deep else np.uint8)


def test_png_level_trades_size_and_keeps_pixels():
    """Issue #19: every zlib level gives the same pixels back; a higher level
    a file no larger than level 1 (level 0 stores them uncompressed)."""
    a = _photo_like(96, 128)
    sizes = {}
    for level in range(10):
        data = imgio.encode(imgio.Picture(a), "png", png_level=level)
        assert np.array_equal(imgio.decode(data).pixels, a), level
        sizes[level] = len(data)
    assert sizes[0] >= a.size  # stored, not compressed
    # 4-9 (zlib's lazy matching) never larger than 1; 2-3 share 1's fast matcher and may
    # come out a few bytes larger than it
    assert all(sizes[level] <= sizes[1] for level in range(4, 10)), sizes
    assert sizes[9] < sizes[1]
    assert sizes[1] < sizes[0]
    # no level given: the fast writer, compressing
    assert len(imgio.encode(imgio.Picture(a), "png")) < sizes[0] * 0.8


@pytest.mark.parametrize("deep", [False, True])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_fast_png_writer_keeps_every_pixel_whole_or_in_bands(deep, channels):
    """The default PNG writer (Average filter, run-length deflate): exact
    pixels for gray, gray+alpha, RGB and RGBA, 8 and 16 bits, and the same
    bytes whether the image comes whole or in bands."""
    a = _photo_like(37, 29, deep=deep, c=channels)
    color, alpha = (a[..., :1], a[..., 1]) if channels == 2 else (a[..., :3], a[..., 3]) if channels == 4 else (a, None)
    whole = imgio.encode(imgio.Picture(color, alpha), "png")
    back = imgio.decode(whole)
    assert np.array_equal(back.pixels, color) and (alpha is None or np.array_equal(back.alpha, alpha))
    buf = _io.BytesIO()
    s = imgio.open_stream("png", buf, 29, 37, channels, 16 if deep else 8)
    for rows in (slice(0, 1), slice(1, 20), slice(20, 37)):
        s.write(a[rows])
    s.close()
    assert buf.getvalue() == whole
    assert len(whole) < a.nbytes


@pytest.mark.parametrize("level", [0, 1, 9])
def test_png_level_in_our_own_writers(level):
    """16-bit colour (our PngStream, whole or band by band) at any level:
    exact pixels, and the level is the one asked for."""
    a = _photo_like(40, 30, deep=True)
    whole = imgio.encode(imgio.Picture(a), "png", png_level=level)
    assert np.array_equal(imgio.decode(whole).pixels, a)
    buf = _io.BytesIO()
    s = imgio.open_stream("png", buf, 30, 40, 3, 16, png_level=level)
    s.write(a[:17])
    s.write(a[17:])
    s.close()
    assert buf.getvalue() == whole
    stored = imgio.encode(imgio.Picture(a), "png", png_level=0)
    assert (len(whole) == len(stored)) == (level == 0)


@pytest.mark.parametrize("big", [False, True])
def test_a_tiff_layout_pillow_cannot_decode_is_named(big):
    ga = np.stack([np.full((4, 5), 1000, np.uint16), np.full((4, 5), 40000, np.uint16)], -1)
    with pytest.raises(InputError) as e:
        imgio.decode(tiff16(ga, big))
    msg = str(e.value)
    assert "TIFF" in msg and "16-bit, 2 samples per pixel (gray + alpha)" in msg and "PNG" in msg
    assert ("BigTIFF" in msg) == big
    assert "unrecognized format" not in msg
    with pytest.raises(InputError, match="TIFF.*damaged header"):
        imgio.decode(b"II*\0\xff\xff\xff\x00")
