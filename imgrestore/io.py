"""Finding inputs, reading and writing images.

Reading gives a `Picture`: pixels as an (H, W, C) uint8 or uint16 array
(C = 1 gray or 3 RGB), an optional alpha plane of the same dtype, and what the
output must carry (EXIF with orientation reset, ICC profile, source format).
Writing is atomic and never clobbers by accident: the image is encoded to a
temporary file in the destination folder, then linked into place (fails if
the name exists) or, with overwrite, renamed over it.
"""

from __future__ import annotations

import glob as globmod
import io as _io
import os
import struct
import sys
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from .errors import InputError, OutputError, OutputExists

# the files taken as images, in folders given as inputs or as data
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif")
# the output formats we write (the --format choices), with their extension
FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif"}
# extension -> output format, for the extensions we can write
EXT_FORMAT = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp", ".tif": "tiff",
              ".tiff": "tiff"}
DEFAULT_MAX_PIXELS = 200_000_000
_UMASK = os.umask(0)  # read once at import (os.umask is process-wide, not thread-safe)
os.umask(_UMASK)


# --------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Job:
    """One input. `source` is a Path or "-" (stdin); `rel` is the path below the
    folder it was found in (mirrored under an output folder)."""

    source: Path | str
    rel: Path
    error: str | None = None  # set when the argument itself was bad

    @property
    def name(self) -> str:
        return "<stdin>" if self.source == "-" else str(self.source)


def find_inputs(args: list[str], recursive: bool = False) -> list[Job]:
    """Files, folders (recursive optional), unexpanded globs and "-" -> jobs.
    An argument that names nothing becomes a job carrying its error, so that
    the batch reports it and goes on."""
    jobs: list[Job] = []
    for arg in args:
        if arg == "-":
            jobs.append(Job("-", Path("stdin")))
            continue
        p = Path(arg)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            found = sorted(f for f in it if f.is_file() and f.suffix.lower() in IMAGE_EXTS
                           and not f.name.startswith("."))
            jobs += [Job(f, f.relative_to(p)) for f in found]
        elif p.is_file():
            jobs.append(Job(p, Path(p.name)))
        elif any(c in arg for c in "*?["):
            found = sorted(Path(f) for f in globmod.glob(arg, recursive=recursive) if Path(f).is_file())
            if not found:
                jobs.append(Job(p, Path(p.name), error="no file matches this pattern"))
            jobs += [Job(f, Path(f.name)) for f in found]
        elif p.exists():
            jobs.append(Job(p, Path(p.name), error="not a regular file"))
        else:
            jobs.append(Job(p, Path(p.name), error="no such file or folder"))
    return jobs


def list_images(dirs: list[str | Path]) -> list[Path]:
    """Every image in the given folders (recursively, sorted) or files: the
    data of training, pruning and benchmarks. Raises ValueError if none."""
    files: list[Path] = []
    for d in dirs:
        d = Path(d)
        if d.is_file():
            files.append(d)
            continue
        files += sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise ValueError(f"no images found in {', '.join(map(str, dirs))}")
    return files


def shard(jobs: list[Job], k: int, n: int) -> list[Job]:
    """The deterministic 1/n slice number k (1-based): a job belongs to the
    shard given by a CRC32 of its relative path, so every machine agrees
    without coordination, whatever order it listed the files in."""
    return [j for j in jobs if zlib.crc32(str(j.rel).encode()) % n == k - 1]


# --------------------------------------------------------------------------- reading

@dataclass
class Picture:
    pixels: np.ndarray  # (H, W, C) uint8 or uint16, C in {1, 3}
    alpha: np.ndarray | None = None  # (H, W) same dtype
    exif: bytes | None = None
    icc: bytes | None = None
    format: str = "png"  # source format key: png, jpg, webp, tiff, ...
    notes: list[str] = field(default_factory=list)
    has_alpha: bool = False  # for output descriptions whose alpha is streamed

    @property
    def gray(self) -> bool:
        return self.pixels.shape[2] == 1

    @property
    def bits(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


def _png_info(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None if not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 26:
        return None
    return data[24], data[25]


def read_bytes(job: Job) -> bytes:
    try:
        data = sys.stdin.buffer.read() if job.source == "-" else Path(job.source).read_bytes()
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror or e})") from None
    if not data:
        raise InputError("empty file (0 bytes)")
    return data


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode image bytes into a `Picture`; raises `InputError` with the reason."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None  # we check the limit ourselves, with our message
            im = Image.open(_io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise InputError(f"{w}x{h} is {w * h / 1e6:.0f} MP, over the pixel limit of "
                                 f"{max_pixels / 1e6:.0f} MP (raise it with --max-pixels)")
            fmt = (im.format or "").lower()
            notes = []
            n_frames = getattr(im, "n_frames", 1)
            if n_frames > 1:
                notes.append(f"animated ({n_frames} frames): used the first frame")
            im.load()
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError("not an image (unrecognized format)") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as e:
        msg = str(e) or type(e).__name__
        raise InputError(f"damaged image ({msg})") from None

    info = dict(im.info)
    icc = info.get("icc_profile")
    exif = None
    try:
        ex = im.getexif()
        if ex:
            orientation = ex.get(0x0112, 1)
            if orientation != 1:
                im = ImageOps.exif_transpose(im)
            ex[0x0112] = 1
            exif = ex.tobytes()
    except Exception:  # broken EXIF must not lose the pixels
        exif = None
        notes.append("EXIF unreadable: dropped")

    fmt_key = {"jpeg": "jpg", "mpo": "jpg"}.get(fmt, fmt)
    pixels, alpha = pil_arrays(im, data, fmt_key)
    if im.mode == "CMYK":
        icc = None  # a CMYK profile no longer describes the converted RGB
        notes.append("CMYK converted to RGB")
    return Picture(pixels, alpha, exif, icc, fmt_key or "png", notes)


def pil_arrays(im, data: bytes = b"", fmt: str = "") -> tuple[np.ndarray, np.ndarray | None]:
    """PIL image (+ the raw bytes for 16-bit colour, which Pillow reduces to
    8 bits) -> (pixels (H, W, C), alpha (H, W) or None)."""
    png = _png_info(data)
    deep_color = (png is not None and png[0] == 16 and png[1] in (2, 6)) or (
        fmt == "tiff" and im.mode in ("RGB", "RGBA", "RGBX") and _tiff_bits(im) == 16)
    if deep_color:
        return _decode_cv2_16(data)
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im)
        if mode == "I" and (a.min() < 0 or a.max() > 65535):
            raise InputError(f"unsupported 32-bit integer image (values {a.min()}..{a.max()})")
        return a.astype(np.uint16)[..., None], None
    if mode == "F":
        a = np.clip(np.asarray(im), 0.0, 1.0) * 65535.0
        return np.round(a).astype(np.uint16)[..., None], None
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("1",):
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in mode else "RGB")
    a = np.asarray(im)
    if im.mode == "L":
        return a[..., None], None
    if im.mode == "LA":
        return a[..., :1], _alpha_or_none(a[..., 1])
    if im.mode == "RGBA":
        return a[..., :3], _alpha_or_none(a[..., 3])
    return a, None


def _alpha_or_none(alpha: np.ndarray) -> np.ndarray | None:
    """Keep an alpha plane only if it is not fully opaque."""
    top = 65535 if alpha.dtype == np.uint16 else 255
    return None if alpha.min() == top else np.ascontiguousarray(alpha)


def _tiff_bits(im) -> int:
    try:
        bps = im.tag_v2.get(258)
        return int(bps[0] if isinstance(bps, tuple) else bps)
    except Exception:
        return 8


def _decode_cv2_16(data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    import cv2

    a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise InputError("damaged 16-bit image")
    if a.ndim == 2:
        return a[..., None], None
    if a.shape[2] == 4:
        rgba = cv2.cvtColor(a, cv2.COLOR_BGRA2RGBA)
        return np.ascontiguousarray(rgba[..., :3]), _alpha_or_none(rgba[..., 3])
    return cv2.cvtColor(a, cv2.COLOR_BGR2RGB), None


def read(job: Job, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    return decode(read_bytes(job), max_pixels)


# --------------------------------------------------------------------------- writing

def output_format(requested: str, source_fmt: str, out_path: Path | None) -> str:
    """png | jpg | webp | tiff for an output. An explicit output file's
    extension wins over `same`; formats we cannot write fall back to png."""
    if requested != "same":
        return requested
    if out_path is not None and out_path.suffix.lower() in EXT_FORMAT:
        return EXT_FORMAT[out_path.suffix.lower()]
    return source_fmt if source_fmt in FORMATS else "png"


def encode(pic: Picture, fmt: str, quality: int = 95, fileobj: BinaryIO | None = None) -> bytes | None:
    """Encode a Picture into `fileobj`, or return the bytes if none is given.
    16-bit survives in png and tiff; jpg and webp are 8-bit (and jpg has no
    alpha: it is dropped with the pixels kept)."""
    if fileobj is None:
        buf = _io.BytesIO()
        encode(pic, fmt, quality, buf)
        return buf.getvalue()
    from PIL import Image

    px, alpha = pic.pixels, pic.alpha
    deep = px.dtype == np.uint16 and fmt in ("png", "tiff")
    if px.dtype == np.uint16 and not deep:
        px = _to8(px)
        alpha = _to8(alpha) if alpha is not None else None
    if fmt == "jpg":
        alpha = None
    if deep and not pic.gray or (deep and alpha is not None):
        fileobj.write(_encode_cv2_16(px, alpha, fmt, pic.icc, pic.exif))
        return None
    if pic.gray:
        g = px[..., 0]
        if alpha is not None:
            im = Image.fromarray(np.dstack([g, alpha]), "LA")
        else:
            im = Image.fromarray(g)  # uint16 -> I;16, uint8 -> L
    else:
        im = Image.fromarray(np.dstack([px, alpha]) if alpha is not None else px,
                             "RGBA" if alpha is not None else "RGB")
    kw: dict = {}
    if pic.icc:
        kw["icc_profile"] = pic.icc
    if pic.exif:
        kw["exif"] = pic.exif
    if fmt == "jpg":
        kw.update(quality=quality, subsampling=0 if quality >= 90 else 2, optimize=False)
    elif fmt == "webp":
        kw.update(quality=quality, method=4)
    elif fmt == "png":
        kw.update(compress_level=png_level(px.size))
    elif fmt == "tiff":
        kw.update(compression="tiff_deflate")
    im.save(fileobj, format={"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF"}[fmt], **kw)
    return None


def png_level(values: int) -> int:
    """zlib level: 6 (Pillow's default) for ordinary images, 1 for huge ones,
    where level 6 costs minutes for little gain."""
    return 6 if values < 50_000_000 else 1


def _to8(a: np.ndarray) -> np.ndarray:
    return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _encode_cv2_16(px, alpha, fmt, icc, exif) -> bytes:
    import cv2

    if px.shape[2] == 1:
        px = np.repeat(px, 3, axis=2)
    a = cv2.cvtColor(px, cv2.COLOR_RGB2BGR)
    if alpha is not None:
        a = np.dstack([a, alpha])
    ok, buf = cv2.imencode(".png" if fmt == "png" else ".tif", a)
    if not ok:
        raise OutputError("16-bit encoder failed")
    data = buf.tobytes()
    if fmt == "png":
        data = png_add_chunks(data, icc, exif)
    return data


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def _meta_chunks(icc: bytes | None, exif: bytes | None) -> bytes:
    """iCCP and eXIf chunks for a PNG (empty if there is nothing to carry)."""
    out = b""
    if icc:
        out += _chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc))
    if exif:
        raw = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
        out += _chunk(b"eXIf", raw)
    return out


def png_add_chunks(png: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP / eXIf chunks right after IHDR (the encoder we use for
    16-bit colour writes neither)."""
    extra = _meta_chunks(icc, exif)
    if not extra:
        return png
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end] + extra + png[ihdr_end:]


def write_atomic(data: bytes | Callable[[BinaryIO], None], path: Path, overwrite: bool) -> None:
    """Write `data` (bytes, or a function that writes into a binary file) to
    `path` through a temporary file in the same folder. Without `overwrite`
    an existing file is never replaced (the final link fails if the name is
    taken, even by a concurrent run). Raises `OutputError`; never leaves the
    temporary file behind, whatever is raised (Ctrl-C included)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"cannot write in {path.parent} ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644 & ~_UMASK)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExists(f"{path} already exists (use --overwrite to replace it)") from None
            except OSError:  # file systems without hard links: best effort
                if path.exists():
                    raise OutputExists(f"{path} already exists (use --overwrite to replace it)") from None
                os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path} ({e.strerror or e})") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


class PngStream:
    """A PNG written band by band, so a huge output is never held whole.

    Rows are filtered with the per-row heuristic libpng uses (of the five PNG
    filters, the one whose output has the smallest sum of absolute signed
    bytes), vectorized over chunks of rows, then deflated incrementally into
    IDAT chunks."""

    def __init__(self, f: BinaryIO, width: int, height: int, channels: int, bits: int,
                 icc: bytes | None = None, exif: bytes | None = None, level: int = 6):
        self.f, self.width, self.height, self.channels, self.bits = f, width, height, channels, bits
        self.bpp = channels * bits // 8
        self.rowbytes = width * self.bpp
        self.prev = np.zeros(self.rowbytes, np.uint8)
        self.rows = 0
        self.z = zlib.compressobj(level)
        color = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, color, 0, 0, 0)))
        f.write(_meta_chunks(icc, exif))

    def write(self, band: np.ndarray) -> None:
        """band: (rows, width, channels) uint8 or uint16."""
        b = band.astype(">u2") if self.bits == 16 else band
        raw = np.ascontiguousarray(b).view(np.uint8).reshape(band.shape[0], self.rowbytes)
        for i in range(0, raw.shape[0], 64):
            chunk = raw[i:i + 64]
            data = self._filter(chunk)
            self.prev = chunk[-1].copy()
            out = self.z.compress(data.tobytes())
            if out:
                self.f.write(_chunk(b"IDAT", out))
        self.rows += band.shape[0]

    def _filter(self, x8: np.ndarray) -> np.ndarray:
        n, bpp = x8.shape[0], self.bpp
        x = x8.astype(np.int16)
        b = np.vstack([self.prev[None].astype(np.int16), x[:-1]])  # up
        a = np.zeros_like(x)
        a[:, bpp:] = x[:, :-bpp]  # left
        c = np.zeros_like(x)
        c[:, bpp:] = b[:, :-bpp]  # up-left
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        cands = np.stack([x, x - a, x - b, x - (a + b) // 2, x - paeth]).astype(np.uint8)  # (5, n, L)
        cost = np.abs(cands.view(np.int8).astype(np.int32)).sum(axis=2)  # (5, n)
        best = cost.argmin(axis=0)  # (n,)
        out = np.empty((n, self.rowbytes + 1), np.uint8)
        out[:, 0] = best
        out[:, 1:] = cands[best, np.arange(n)]
        return out

    def close(self) -> None:
        if self.rows != self.height:
            raise OutputError(f"PNG stream got {self.rows} of {self.height} rows")
        self.f.write(_chunk(b"IDAT", self.z.flush()))
        self.f.write(_chunk(b"IEND", b""))
