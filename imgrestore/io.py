"""Finding inputs, reading and writing images.

Reading gives a `Picture`: pixels as an (H, W, C) uint8 or uint16 array
(C = 1 gray or 3 RGB), an optional alpha plane of the same dtype, and what the
output must carry (EXIF with orientation reset, ICC profile, source format).
Writing is atomic and never clobbers by accident: the image is encoded to a
temporary file in the destination folder, then linked into place (fails if
the name exists) or, with overwrite, renamed over it.
"""

from __future__ import annotations

import functools
import glob as globmod
import io as _io
import os
import re
import stat
import struct
import sys
import tempfile
import threading
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

from .errors import InputError, OutputError, OutputExists

# the files taken as images, in folders given as inputs or as data
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".jfif", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif",
              ".avif")
# the output formats we write (the --format choices), with their extension
FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif"}
# extension -> output format, for the extensions we can write
EXT_FORMAT = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".jfif": "jpg", ".webp": "webp", ".tif": "tiff",
              ".tiff": "tiff"}
# the largest side each output format can hold
MAX_SIDE = {"jpg": 65_500, "webp": 16_383, "png": 2**31 - 1, "tiff": 2**32 - 1}
MAX_EXIF = 65_000  # an EXIF block must fit one JPEG APP1 segment (64 KB)
# generous (x4 of a 6000x4500 photo is 432 MP) but finite: a small file
# declaring 14000x14000 pixels would otherwise run for many minutes at x2
DEFAULT_MAX_OUTPUT_PIXELS = 500_000_000
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


class Found(list):
    """The jobs `find_inputs` made, and what it left out on purpose: `notes`
    (one line per kind, for the user)."""

    notes: list[str]


def output_names(patterns: tuple[str, ...], literal: tuple[str, ...] = ()) -> re.Pattern | None:
    """The stems of our own outputs: a task's suffix (`patterns`, regular
    expressions such as `_x\\d+`), alone or followed by a model's name
    (`photo_x4_x4-small`), or one of the `literal` suffixes (--suffix)."""
    alts = [f"(?:{'|'.join(patterns)})(?:_[A-Za-z0-9._+-]+)?"] if patterns else []
    alts += [re.escape(s) for s in literal if s]
    return re.compile(f"(?:{'|'.join(alts)})$") if alts else None


def _is_output_name(f: Path, names: re.Pattern | None) -> bool:
    return names is not None and names.search(f.stem) is not None


def _inside(f: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        return Path(os.path.abspath(f)).is_relative_to(folder)
    except (OSError, ValueError):
        return False


def find_inputs(args: list[str], recursive: bool = False, skip_names: re.Pattern | None = None,
                skip_dir: str | Path | None = None) -> Found:
    """Files, folders (recursive optional), unexpanded globs and "-" -> jobs.
    An argument that names nothing becomes a job carrying its error, so that
    the batch reports it and goes on.

    Files given by name and files a glob matched mirror their path below
    their common parent (as files found in a folder mirror their path below
    it), so that `x/a/p.png x/b/p.png -o out/` gives out/a/p.png and
    out/b/p.png. Folder and glob scans leave out our own earlier outputs:
    files under `skip_dir` (the output folder) and files whose stem
    `skip_names` finds (`output_names`); files named explicitly are always taken. A file
    given twice is taken once."""
    skip_dir = Path(os.path.abspath(skip_dir)) if skip_dir is not None else None
    jobs: list[Job] = []
    loose: list[int] = []  # indices of jobs for files named or globbed
    left_out = 0

    def scanned(files) -> list[Path]:
        nonlocal left_out
        keep = []
        for f in files:
            if _inside(f, skip_dir) or _is_output_name(f, skip_names):
                left_out += 1
            else:
                keep.append(f)
        return keep

    for arg in args:
        if arg == "-":
            jobs.append(Job("-", Path("stdin")))
            continue
        p = Path(arg)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            found = sorted(f for f in it if f.is_file() and f.suffix.lower() in IMAGE_EXTS
                           and not f.name.startswith("."))
            if not _inside(p, skip_dir):  # the output folder given as input is taken whole
                found = scanned(found)
            jobs += [Job(f, f.relative_to(p)) for f in found]
        elif p.is_file():
            loose.append(len(jobs))
            jobs.append(Job(p, Path(p.name)))
        elif any(c in arg for c in "*?["):
            found = sorted(Path(f) for f in globmod.glob(arg, recursive=recursive) if Path(f).is_file())
            if not found:
                jobs.append(Job(p, Path(p.name), error="no file matches this pattern"))
            for f in scanned(found):
                loose.append(len(jobs))
                jobs.append(Job(f, Path(f.name)))
        elif p.exists():
            jobs.append(Job(p, Path(p.name), error="not a regular file"))
        else:
            jobs.append(Job(p, Path(p.name), error="no such file or folder"))
    if len(loose) > 1:
        absolute = [os.path.abspath(jobs[i].source) for i in loose]
        parent = os.path.commonpath([os.path.dirname(a) for a in absolute])
        for i, a in zip(loose, absolute):
            jobs[i] = Job(jobs[i].source, Path(os.path.relpath(a, parent)))
    out, seen, repeated = Found(), set(), 0
    for j in jobs:
        key = None
        if j.error is None and j.source != "-":
            try:
                st = os.stat(j.source)
                key = (st.st_dev, st.st_ino)
            except OSError:
                pass
        if key is not None and key in seen:
            repeated += 1
            continue
        seen.add(key) if key is not None else None
        out.append(j)
    out.notes = []
    if left_out:
        out.notes.append(f"left out {left_out} file{'s' * (left_out > 1)} found by folder or pattern "
                         "that look like our own outputs (in the output folder, or named with an "
                         "output suffix); name them explicitly to process them")
    if repeated:
        out.notes.append(f"{repeated} input{'s' * (repeated > 1)} given more than once: processed once")
    return out


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


@functools.cache
def decoders() -> None:
    """Register the decoders Pillow lacks, once: HEIC/HEIF (phone photos)
    through pillow-heif, whose wheels carry their own libheif."""
    try:
        import pillow_heif
    except ImportError:  # an install without it: HEIC inputs fail as unrecognized
        return
    pillow_heif.register_heif_opener()


def open_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS):
    """The image at `path` as a loaded 8-bit RGB PIL image, or None when it
    cannot be one (empty, damaged, not an image, over `max_pixels`): the
    data of training, pruning and benchmarks skip such files."""
    from PIL import Image

    decoders()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                if im.size[0] * im.size[1] > max_pixels:
                    return None
                return im.convert("RGB")
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, Image.DecompressionBombError):
        return None


def shard(jobs: list[Job], k: int, n: int) -> list[Job]:
    """The deterministic 1/n slice number k (1-based): a job belongs to the
    shard given by a CRC32 of its relative path, so every machine agrees
    without coordination, whatever order it listed the files in."""
    # fsencode: a name that is not valid UTF-8 hashes by its bytes
    return [j for j in jobs if zlib.crc32(os.fsencode(str(j.rel))) % n == k - 1]


def shown(name: object) -> str:
    """A name as messages show it: one line, and nothing the terminal would
    act on (control characters, newlines and bytes that are not UTF-8 are
    written as escapes)."""
    out = []
    for ch in str(name):
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x20 or 0x7F <= o < 0xA0 or 0xD800 <= o < 0xE000 or ch in "\u2028\u2029":
            out.append(ch.encode("unicode_escape").decode("ascii") if o < 0x10000 else ch)
        else:
            out.append(ch)
    return "".join(out)


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
    jpeg_quality: int | None = None  # a JPEG input's quality, judged from its quantization tables

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


def _tiff_layout(data: bytes) -> str | None:
    """A TIFF's first image as words ("16-bit, 2 samples per pixel (gray +
    alpha), LZW"), None if `data` is not a TIFF, "" if its header is damaged."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 8:
        return None
    try:
        magic = struct.unpack(order + "H", data[2:4])[0]
        if magic == 42:  # classic: 2-byte count, 12-byte entries, 4-byte values
            (ifd,) = struct.unpack(order + "I", data[4:8])
            count_fmt, entry, value_fmt, inline = "H", 12, "I", 4  # inline: the value field's bytes
        elif magic == 43:  # BigTIFF: 8-byte count, 20-byte entries, 8-byte values
            (ifd,) = struct.unpack(order + "Q", data[8:16])
            count_fmt, entry, value_fmt, inline = "Q", 20, "Q", 8
        else:
            return None
        cw = struct.calcsize(count_fmt)
        (n,) = struct.unpack(order + count_fmt, data[ifd:ifd + cw])
        sizes = {1: "B", 3: "H", 4: "I", 16: "Q"}
        tags: dict[int, tuple] = {}
        for i in range(min(n, 512)):
            e = ifd + cw + i * entry
            tag, typ = struct.unpack(order + "HH", data[e:e + 4])
            (cnt,) = struct.unpack(order + value_fmt, data[e + 4:e + 4 + inline])
            if tag not in (258, 259, 262, 277, 338) or typ not in sizes or cnt > 64:
                continue
            fmt = order + sizes[typ] * cnt
            size = struct.calcsize(fmt)
            at = e + 4 + inline
            if size > inline:
                (at,) = struct.unpack(order + value_fmt, data[at:at + inline])
            tags[tag] = struct.unpack(fmt, data[at:at + size])
    except (struct.error, IndexError):
        return ""
    samples = tags.get(277, (1,))[0]
    bits = sorted(set(tags.get(258, (1,))))
    kind = {1: "gray", 2: "gray + alpha", 3: "RGB", 4: "RGBA"}.get(samples) if tags.get(262, (1,))[0] in (0, 1, 2) else None
    codec = {1: "", 5: ", LZW", 7: ", JPEG", 8: ", deflate", 32773: ", PackBits", 34925: ", LZMA",
             50000: ", Zstandard", 50001: ", WebP"}.get(tags.get(259, (1,))[0], f", compression {tags.get(259, (0,))[0]}")
    depth = "/".join(str(b) for b in bits) + "-bit"
    return (f"{'BigTIFF, ' if magic == 43 else ''}{depth}, {samples} sample{'s' if samples != 1 else ''} per pixel"
            f"{f' ({kind})' if kind else ''}{codec}")


def pixels_text(n: int) -> str:
    """A pixel count for a message: "4,800 pixels", "1.3 MP", "500 MP"
    (rounded to whole megapixels, a limit of 100 pixels read "0 MP")."""
    if n < 1_000_000:
        return f"{n:,} pixels"
    mp = n / 1e6
    return f"{mp:,.0f} MP" if mp >= 100 or mp == int(mp) else f"{mp:.3g} MP"


def read_bytes(job: Job) -> bytes:
    try:
        data = sys.stdin.buffer.read() if job.source == "-" else Path(job.source).read_bytes()
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror or e})") from None
    if not data:
        raise InputError("empty file (0 bytes)")
    return data


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
           check: Callable[[int, int], None] | None = None) -> Picture:
    """Decode image bytes into a `Picture`; raises `InputError` with the
    reason. `check(width, height)` runs on the header, before the pixels
    are decoded (and may raise)."""
    from PIL import Image, UnidentifiedImageError

    decoders()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the bomb guard is ours; damage is reported, not warned
            Image.MAX_IMAGE_PIXELS = None  # we check the limit ourselves, with our message
            im = Image.open(_io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise InputError(f"{w}x{h} is {pixels_text(w * h)}, over the pixel limit of "
                                 f"{pixels_text(max_pixels)} (raise it with --max-pixels)")
            if check is not None:
                check(w, h)
            fmt = (im.format or "").lower()
            notes = []
            n_frames = getattr(im, "n_frames", 1)
            if n_frames > 1:
                notes.append(f"animated ({n_frames} frames): used the first frame")
            im.load()
    except InputError:
        raise
    except UnidentifiedImageError:
        layout = _tiff_layout(data)
        if layout is not None:
            raise InputError(f"a TIFF imgrestore cannot decode ({layout or 'damaged header'}): Pillow has no "
                             "decoder for this layout; save it as PNG (8 or 16 bits, gray or RGB, with or "
                             "without alpha)") from None
        raise InputError("not an image (unrecognized format)") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as e:
        msg = str(e) or type(e).__name__
        raise InputError(f"damaged image ({msg})") from None

    info = dict(im.info)
    icc = info.get("icc_profile")
    exif, orientation = None, 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a corrupt EXIF block: Pillow warns, we note
            ex = im.getexif()
            if ex:
                orientation = ex.get(0x0112, 1)
                for tag in STRUCTURAL_TAGS & set(ex):
                    del ex[tag]  # a TIFF's layout tags describe its own strips, not our output
                ex[0x0112] = 1
                exif = ex.tobytes()
                if len(exif) > MAX_EXIF:
                    notes.append(f"EXIF over 64 KB ({len(exif) // 1024} KB): dropped")
                    exif = None
    except Exception:  # broken EXIF must not lose the pixels
        exif = None
        notes.append("EXIF unreadable: dropped")

    fmt_key = {"jpeg": "jpg", "mpo": "jpg"}.get(fmt, fmt)
    quality = jpeg_quality(getattr(im, "quantization", None)) if fmt_key == "jpg" else None
    pixels, alpha = pil_arrays(im, data, fmt_key, notes)
    if orientation in ORIENT:
        pixels = ORIENT[orientation](pixels)
        alpha = None if alpha is None else ORIENT[orientation](alpha)
    if im.mode == "CMYK":
        icc = None  # a CMYK profile no longer describes the converted RGB
        notes.append("CMYK converted to RGB")
    return Picture(pixels, alpha, exif, icc, fmt_key or "png", notes, jpeg_quality=quality)


# the IJG (libjpeg) luminance quantization table at quality 50, natural order
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)


def jpeg_quality(tables: dict | None) -> int | None:
    """The IJG quality (1-100) whose luminance table is closest (in log
    steps) to a JPEG's first quantization table, as Pillow reads it
    (natural order); None without tables. Encoders with their own tables
    (cameras) get the IJG quality of about the same coarseness."""
    if not tables:
        return None
    first = np.asarray(tables[min(tables)], dtype=np.float64)
    if first.size != 64 or (first <= 0).any():
        return None
    q = np.arange(1, 101)[:, None]
    scale = np.where(q < 50, 5000 // q, 200 - 2 * q)
    ref = np.clip((_IJG_LUMA[None] * scale + 50) // 100, 1, 255)  # (100, 64)
    return int(np.argmin(np.abs(np.log(ref) - np.log(first[None])).sum(1))) + 1


# TIFF tags that describe a file's own layout (size, strips, tiles, sample
# format, compression...): carried into another file they corrupt it. What
# an EXIF block may carry on is the rest (camera, date, GPS, ...).
STRUCTURAL_TAGS = frozenset({
    254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279, 280, 281, 284,
    288, 289, 290, 291, 292, 293, 317, 318, 319, 320, 322, 323, 324, 325, 330, 332, 338, 339,
    340, 341, 343, 347, 351, 512, 513, 514, 515, 517, 518, 519, 520, 521, 529, 530, 531, 532,
    34675,  # the ICC profile: carried on its own
})

# EXIF orientation -> the array operation that makes an (H, W, ...) array
# upright (as ImageOps.exif_transpose does to an image)
ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
ORIENT = {k: (lambda f: lambda a: np.ascontiguousarray(f(a)))(f) for k, f in ORIENT.items()}


def pil_arrays(im, data: bytes = b"", fmt: str = "", notes: list[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """PIL image (+ the raw bytes for 16-bit colour and gray+alpha, which
    Pillow reduces to 8 bits) -> (pixels (H, W, C), alpha (H, W) or None).
    Float pixels are read as 0..1, 0..255 or 0..65535, whichever range holds
    them, into 16 bits (a note in `notes` says which)."""
    png = _png_info(data)
    if png is not None and png[0] == 16 and png[1] == 4:  # 16-bit gray + alpha
        a = _decode_cv2_16(data)
        return a[0][..., :1], a[1]
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
        a = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = max(float(a.max(initial=0.0)), 0.0)
        full = next(t for t in (1.0, 255.0, 65535.0, top) if top <= t)
        if notes is not None:
            notes.append(f"float pixels read as 0..{full:g} into 16 bits")
        a = np.clip(a, 0.0, full) * (65535.0 / (full or 1.0))
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
    if a.shape[2] == 2:  # gray + alpha
        return np.ascontiguousarray(a[..., :1]), _alpha_or_none(a[..., 1])
    if a.shape[2] == 4:
        rgba = cv2.cvtColor(a, cv2.COLOR_BGRA2RGBA)
        return np.ascontiguousarray(rgba[..., :3]), _alpha_or_none(rgba[..., 3])
    return cv2.cvtColor(a, cv2.COLOR_BGR2RGB), None


def read(job: Job, max_pixels: int = DEFAULT_MAX_PIXELS,
         check: Callable[[int, int], None] | None = None) -> Picture:
    return decode(read_bytes(job), max_pixels, check)


# --------------------------------------------------------------------------- writing

def output_format(requested: str, source_fmt: str, out_path: Path | None) -> str:
    """png | jpg | webp | tiff for an output. An explicit output file's
    extension wins over `auto` (or `same`); formats we cannot write fall
    back to png."""
    if requested not in ("same", "auto"):
        return requested
    if out_path is not None and out_path.suffix.lower() in EXT_FORMAT:
        return EXT_FORMAT[out_path.suffix.lower()]
    return source_fmt if source_fmt in FORMATS else "png"


def jpeg_roundtrip(a: np.ndarray, quality: int, subsampling: int = -1) -> np.ndarray:
    """An (H, W) gray or (H, W, 3) RGB uint8 array saved as a Pillow JPEG of
    `quality` and decoded again: the JPEG degradation that training and the
    benchmarks apply. `subsampling`: -1 Pillow's default (4:2:0), 0 4:4:4,
    2 4:2:0."""
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=int(quality), subsampling=subsampling)
    with Image.open(buf) as im:
        return np.asarray(im)


def encode(pic: Picture, fmt: str, quality: int = 95, fileobj: BinaryIO | None = None,
           png_level: int | None = None) -> bytes | None:
    """Encode a Picture into `fileobj`, or return the bytes if none is given.
    16-bit survives in png and tiff; jpg and webp are 8-bit (and jpg has no
    alpha: it is dropped with the pixels kept). `png_level`: the PNG zlib
    level 0-9 (Pillow's writer, or ours where Pillow has no mode), or None
    for our fast writer (`PngStream`)."""
    if fileobj is None:
        buf = _io.BytesIO()
        encode(pic, fmt, quality, buf, png_level)
        return buf.getvalue()
    from PIL import Image

    px, alpha = pic.pixels, pic.alpha
    deep = px.dtype == np.uint16 and fmt in ("png", "tiff")
    if px.dtype == np.uint16 and not deep:
        px = _to8(px)
        alpha = _to8(alpha) if alpha is not None else None
    if fmt == "jpg":
        alpha = None
    if fmt == "tiff":
        if deep and pic.gray and alpha is not None:
            px = np.repeat(px, 3, axis=2)  # 16-bit gray+alpha TIFF: few readers take it
        h, w, c = px.shape
        tif = TiffStream(fileobj, w, h, c + (alpha is not None), 16 if deep else 8, pic.icc, pic.exif)
        tif.write(np.dstack([px, alpha]) if alpha is not None else px)
        tif.close()
        return None
    if fmt == "png" and (png_level is None or (deep and (not pic.gray or alpha is not None))):
        # our own writer: the fast one by default, and at any level where
        # Pillow has no mode (16-bit colour or gray+alpha)
        h, w, c = px.shape
        png = PngStream(fileobj, w, h, c + (alpha is not None), 16 if deep else 8, pic.icc, pic.exif, png_level)
        png.write(np.dstack([px, alpha]) if alpha is not None else px)
        png.close()
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
        kw.update(compress_level=png_level)
    im.save(fileobj, format={"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF"}[fmt], **kw)
    return None


# the output formats written band by band (`open_stream`); WebP is not:
# libwebp encodes a whole picture at once (it holds at most 16,383 px a side)
STREAM_FORMATS = ("png", "tiff", "jpg")


def open_stream(fmt: str, f: BinaryIO, width: int, height: int, channels: int, bits: int,
                icc: bytes | None = None, exif: bytes | None = None, quality: int = 95,
                png_level: int | None = None):
    """A band-by-band writer (`write(band)`, then `close()`) of an image in
    `fmt` (one of STREAM_FORMATS) into `f`, as `encode` would write it whole.
    `channels` counts alpha; TIFF needs `f` seekable. `png_level` as in
    `encode` (PNG only: TIFF keeps its automatic level)."""
    if fmt == "jpg":
        return JpegStream(f, width, height, channels, bits, icc, exif, quality)
    if fmt == "png":
        return PngStream(f, width, height, channels, bits, icc, exif, png_level)
    level = tiff_level_for(width * height * (channels - (channels in (2, 4))))  # as `encode`: alpha not counted
    return TiffStream(f, width, height, channels, bits, icc, exif, level)


def tiff_level_for(values: int) -> int:
    """TIFF strips' zlib level: 6 for ordinary images, 1 for huge ones,
    where level 6 costs minutes for little gain."""
    return 6 if values < 50_000_000 else 1


def _to8(a: np.ndarray) -> np.ndarray:
    return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


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


# our temporary files: .NAME.imgrestore-PID-XXXXXXXX.tmp next to the output
# (hidden; the writer's process id, then mkstemp's eight random characters)
_TMP_TAG = "imgrestore"
_TMP_NAME = re.compile(rf"\..*\.{_TMP_TAG}-([0-9]+)-[a-z0-9_]{{8}}\.tmp", re.DOTALL)
# a temporary file untouched this long, whose writer is gone, was left by a
# killed run (kill -9, a power cut): writers touch theirs at every band. The
# age also spares a live writer on another machine sharing the folder.
STALE_AFTER = 30 * 60
_swept: set[str] = set()
_swept_lock = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # not ours to signal (another user's): alive
        return True
    return True


def sweep_stale(folder: str | Path, older_than: float = STALE_AFTER) -> int:
    """Remove, from `folder`, temporary files of our own naming that a killed
    run left: named `.NAME.imgrestore-PID-XXXXXXXX.tmp`, regular files of
    this user, unchanged for `older_than` seconds, and whose PID is no live
    process. Nothing else is touched; errors are ignored (someone else may
    be sweeping too). Returns how many were removed. POSIX only (elsewhere
    no process can be asked whether it lives without harming it)."""
    if os.name != "posix":
        return 0
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        m = _TMP_NAME.fullmatch(e.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or now - st.st_mtime < older_than
                    or _pid_alive(int(m.group(1)))):
                continue
            os.unlink(e.path)
            removed += 1
        except OSError:
            pass
    return removed


def _sweep_once(folder: Path) -> None:
    """`sweep_stale` each output folder once per process."""
    key = os.path.abspath(folder)
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    sweep_stale(folder)


class _PythonWrites:
    """A binary file without `fileno`: Pillow then hands its encoders'
    output to `write`, whose buffered writer finishes a short write or
    raises (a full disk, a file size limit). Given a descriptor, Pillow
    writes a small image from C in one write() and ignores a short count:
    the output was cut short and reported as done."""

    def __init__(self, f: BinaryIO):
        self._f = f

    def fileno(self):
        raise _io.UnsupportedOperation("fileno")

    def __getattr__(self, name):
        return getattr(self._f, name)


def write_atomic(data: bytes | Callable[[BinaryIO], None], path: Path, overwrite: bool) -> None:
    """Write `data` (bytes, or a function that writes into a binary file) to
    `path` through a temporary file in the same folder. Without `overwrite`
    an existing file is never replaced (the final link fails if the name is
    taken, even by a concurrent run). Raises `OutputError`; never leaves the
    temporary file behind, whatever is raised (Ctrl-C included). What only
    a killed process leaves (`.NAME.imgrestore-PID-XXXXXXXX.tmp`) is swept
    from the folder by the next run that writes there (`sweep_stale`)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the temporary name must fit where the final one fits (255 bytes)
        stem = os.fsencode(path.name)[:200].decode(errors="ignore") if os.name != "nt" else path.name[:200]
        _sweep_once(path.parent)  # what a killed run left here
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.{_TMP_TAG}-{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"cannot write in {path.parent} ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(_PythonWrites(f))
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

    `level` None (the default of every PNG output): the fast writer. Every
    row gets PNG's Average filter (a pixel less the mean of its left and
    upper neighbours: two vector operations), deflated with zlib's
    run-length strategy. On the x4 of a 1024x768 photo it wrote 7.5 MB in
    0.33 s, where Pillow took 3.1 s for 7.6 MB at its default level 6 and
    0.68 s for 9.7 MB at level 1 (weights/MODEL_CARD.md, "Speed"). Segments
    of about a megabyte are filtered and deflated on FAST_THREADS threads at
    once (zlib and numpy release the GIL), each a raw deflate stream ended
    by a sync flush, joined in order into one zlib stream whose Adler-32 is
    combined from theirs, as pigz does; every band is finished before
    `write` returns, so the encoder never competes with the network for
    the cores. The segments are cut at fixed rows, whatever the bands: the
    same bytes whole or streamed.
    `level` 0-9 (--png-level): zlib at that level, rows filtered with the
    per-row heuristic libpng uses (of the five PNG filters, the one whose
    output has the smallest sum of absolute signed bytes), vectorized over
    chunks of rows. Either way deflated incrementally into IDAT chunks."""

    def __init__(self, f: BinaryIO, width: int, height: int, channels: int, bits: int,
                 icc: bytes | None = None, exif: bytes | None = None, level: int | None = None):
        self.f, self.width, self.height, self.channels, self.bits = f, width, height, channels, bits
        self.bpp = channels * bits // 8
        self.rowbytes = width * self.bpp
        self.prev = np.zeros(self.rowbytes, np.uint8)
        self.rows = 0
        self.fast = level is None
        if self.fast:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(FAST_THREADS, thread_name_prefix="png")
            self.pending = RowBuffer()
            self.segments: list = []
            self.segment_rows = max(1, (1 << 20) // self.rowbytes)
            self.adler = 1
            self.started = False
        else:
            self.z = zlib.compressobj(level)
        color = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, color, 0, 0, 0)))
        f.write(_meta_chunks(icc, exif))

    def write(self, band: np.ndarray) -> None:
        """band: (rows, width, channels) uint8 or uint16."""
        b = band.astype(">u2") if self.bits == 16 else band
        raw = np.ascontiguousarray(b).view(np.uint8).reshape(band.shape[0], self.rowbytes)
        self.rows += band.shape[0]
        if self.fast:
            self.pending.add(raw)
            while self.pending.rows >= self.segment_rows:
                self._submit(self.pending.take(self.segment_rows))
            self._drain()
            return
        step = max(1, min(64, (1 << 20) // self.rowbytes))  # rows filtered at once: ~1 MB, ~40 MB of temporaries
        for i in range(0, raw.shape[0], step):
            chunk = raw[i:i + step]
            data = self._adaptive(chunk)
            self.prev = chunk[-1].copy()
            out = self.z.compress(data.tobytes())
            if out:
                self.f.write(_chunk(b"IDAT", out))

    def _submit(self, rows: np.ndarray) -> None:
        prev, self.prev = self.prev, rows[-1].copy()
        self.segments.append(self.pool.submit(self._segment, rows, prev))

    def _segment(self, x8: np.ndarray, prev: np.ndarray) -> tuple[bytes, int, int]:
        """Rows -> (raw deflate ending on a byte boundary, Adler-32, length)
        of their filtered bytes."""
        data = self._average(x8, prev)
        z = zlib.compressobj(1, zlib.DEFLATED, -15, 8, zlib.Z_RLE)
        return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH), zlib.adler32(data), data.size

    def _drain(self) -> None:
        """Write the finished segments, in order, one IDAT chunk each."""
        for fut in self.segments:
            data, adler, n = fut.result()
            self.adler = _adler32_combine(self.adler, adler, n)
            if not self.started:
                data, self.started = b"\x78\x01" + data, True  # zlib header: deflate, 32K window
            self.f.write(_chunk(b"IDAT", data))
        self.segments.clear()

    def _average(self, x8: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """(n, rowbytes) raw rows (and the row above them) -> (n, 1 +
        rowbytes) rows with the Average filter: x - (left + up) // 2, modulo
        256."""
        n, bpp = x8.shape[0], self.bpp
        mean = np.vstack([prev[None], x8[:-1]]).astype(np.uint16)  # up
        mean[:, bpp:] += x8[:, :-bpp]  # + left
        out = np.empty((n, self.rowbytes + 1), np.uint8)
        out[:, 0] = 3
        np.subtract(x8, (mean >> 1).astype(np.uint8), out=out[:, 1:])  # wraps modulo 256, as PNG wants
        return out

    def _adaptive(self, x8: np.ndarray) -> np.ndarray:
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
        if self.fast:
            _finish_encoders(self)
        if self.rows != self.height:
            raise OutputError(f"PNG stream got {self.rows} of {self.height} rows")
        if self.fast:
            # the last block (empty, final) and the stream's Adler-32
            self.f.write(_chunk(b"IDAT", b"\x03\x00" + struct.pack(">I", self.adler)))
        else:
            self.f.write(_chunk(b"IDAT", self.z.flush()))
        self.f.write(_chunk(b"IEND", b""))


# threads of the fast PNG writer and of the JPEG stream's encoders
FAST_THREADS = max(1, min(4, os.cpu_count() or 1))


def _finish_encoders(stream) -> None:
    """A stream writer whose encoders run on threads (`pool`; rows waiting
    in `pending`, handed over by `_submit`, written in order by `_drain`):
    encode and write its last rows, and stop its threads."""
    try:
        if stream.pending.rows:
            stream._submit(stream.pending.take(stream.pending.rows))
        stream._drain()
    finally:
        stream.pool.shutdown()


def _adler32_combine(a1: int, a2: int, len2: int) -> int:
    """The Adler-32 of two byte strings joined, from each one's and the
    second one's length (zlib's adler32_combine)."""
    base = 65521
    rem = len2 % base
    s1 = a1 & 0xFFFF
    s2 = (rem * s1) % base
    s1 = (s1 + (a2 & 0xFFFF) + base - 1) % base
    s2 = (s2 + (a1 >> 16) + (a2 >> 16) + base - rem) % base
    return s1 | (s2 << 16)


class RowBuffer:
    """Bands of rows in, blocks of a chosen number of rows out: what the
    stream writers that encode fixed groups of rows (JPEG, TIFF strips) keep
    between bands."""

    def __init__(self):
        self.bands: list[np.ndarray] = []
        self.rows = 0

    def add(self, band: np.ndarray) -> None:
        self.bands.append(band)
        self.rows += band.shape[0]

    def take(self, rows: int) -> np.ndarray:
        """The next `rows` rows (at most what is held)."""
        block = np.concatenate(self.bands) if len(self.bands) > 1 else self.bands[0]
        part, rest = block[:rows], block[rows:]
        self.bands = [rest] if rest.shape[0] else []
        self.rows -= part.shape[0]
        return part


class JpegStream:
    """A baseline JPEG written band by band, so a huge output is never held
    whole (neither by us nor by the encoder).

    JPEG codes the image in independent rows of MCUs (8 or 16 pixel rows)
    once a restart marker ends each row: the DC predictions start over
    after every marker. So each group of 8 MCU rows is encoded on its own
    by Pillow (libjpeg) with a marker after every MCU row and the same
    tables (same quality, standard Huffman tables), and the groups' scans
    are joined: the first group's header (with EXIF and ICC, and the total
    height in the frame header), every group's entropy-coded rows, a
    restart marker between groups. Groups of a multiple of 8 MCU rows end
    on marker RST7, so the markers inside each group keep their numbers.
    The file equals, byte for byte, the one Pillow writes for the whole
    image with `restart_marker_rows=1`. Bands may be 16-bit (written as 8)
    and carry alpha (dropped: JPEG has none)."""

    def __init__(self, f: BinaryIO, width: int, height: int, channels: int, bits: int,
                 icc: bytes | None = None, exif: bytes | None = None, quality: int = 95):
        if max(width, height) > MAX_SIDE["jpg"]:
            raise OutputError(f"JPEG holds at most {MAX_SIDE['jpg']:,} pixels a side")
        self.f, self.width, self.height, self.channels, self.bits = f, width, height, channels, bits
        self.icc, self.exif, self.quality = icc, exif, quality
        self.subsampling = 0 if quality >= 90 else 2  # as `encode` writes a JPEG
        self.color = channels >= 3
        mcu = 16 if self.color and self.subsampling == 2 else 8
        group = 8 * mcu  # rows a group must be a multiple of (but the last)
        self.group_rows = group * max(1, (1 << 20) // (group * width * (3 if self.color else 1)))  # ~1 MB
        self.pending = RowBuffer()
        self.rows = 0
        self.submitted = 0  # rows handed to the encoders
        # groups are encoded on FAST_THREADS threads (libjpeg releases the
        # GIL) and written in order before `write` returns, as PngStream's
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(FAST_THREADS, thread_name_prefix="jpeg")
        self.groups: list = []

    def write(self, band: np.ndarray) -> None:
        """band: (rows, width, channels) uint8 or uint16."""
        band = band[..., :3] if self.color else band[..., :1]  # no alpha in JPEG
        if band.dtype == np.uint16:
            band = _to8(band)
        self.pending.add(band)
        while self.pending.rows >= self.group_rows:
            self._submit(self.pending.take(self.group_rows))
        self._drain()

    def _submit(self, part: np.ndarray) -> None:
        self.groups.append((self.pool.submit(self._encode, part, self.submitted == 0), part.shape[0]))
        self.submitted += part.shape[0]

    def _drain(self) -> None:
        for fut, rows in self.groups:
            self._put(fut.result(), rows)
        self.groups.clear()

    def _encode(self, part: np.ndarray, first: bool) -> memoryview:
        """A group of rows as a whole JPEG (the first carries EXIF and ICC)."""
        from PIL import Image

        kw: dict = {}
        if first and self.icc:
            kw["icc_profile"] = self.icc
        if first and self.exif:
            kw["exif"] = self.exif
        im = Image.fromarray(np.ascontiguousarray(part if self.color else part[..., 0]),
                             "RGB" if self.color else "L")
        buf = _io.BytesIO()
        im.save(buf, "JPEG", quality=self.quality, subsampling=self.subsampling, optimize=False,
                restart_marker_rows=1, **kw)
        return buf.getbuffer()

    def _put(self, data, rows: int) -> None:
        """Join a group's JPEG to the file: the first's header (with the
        whole image's height), every group's entropy-coded rows."""
        first = self.rows == 0
        head, scan = _jpeg_split(data)
        if first:
            if not any(m == 0xDD for m, _, _ in _jpeg_segments(head)):  # Pillow < 10.2 ignores the option
                raise OutputError("this Pillow writes no JPEG restart markers, which large JPEG outputs "
                                  "need (upgrade to Pillow 10.2 or newer, or choose --format png)")
            head = bytearray(head)
            sof = _jpeg_marker(head, 0xC0)
            struct.pack_into(">H", head, sof + 5, self.height)  # the whole image's height
            self.f.write(head)
        else:
            self.f.write(b"\xff\xd7")  # RST7: every group ends on the 8th marker
        self.f.write(scan)
        self.rows += rows

    def close(self) -> None:
        _finish_encoders(self)
        if self.rows != self.height:
            raise OutputError(f"JPEG stream got {self.rows} of {self.height} rows")
        self.f.write(b"\xff\xd9")  # EOI


def _jpeg_segments(data) -> Iterator[tuple[int, int, int]]:
    """(marker, position, length) of a JPEG's header segments, up to and
    including the start of scan."""
    pos = 2  # after SOI
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise OutputError("JPEG encoder wrote an unexpected header")
        marker, length = data[pos + 1], struct.unpack_from(">H", data, pos + 2)[0]
        yield marker, pos, length
        if marker == 0xDA:
            return
        pos += 2 + length


def _jpeg_marker(data, marker: int) -> int:
    for m, pos, _ in _jpeg_segments(data):
        if m == marker:
            return pos
    raise OutputError(f"JPEG encoder wrote no marker {marker:02X}")


def _jpeg_split(data) -> tuple[bytes, memoryview]:
    """A one-scan JPEG -> (header up to the scan, entropy-coded data without EOI)."""
    pos = _jpeg_marker(data, 0xDA)
    start = pos + 2 + struct.unpack_from(">H", data, pos + 2)[0]
    if bytes(data[-2:]) != b"\xff\xd9":
        raise OutputError("JPEG encoder wrote no end of image")
    return bytes(data[:start]), memoryview(data)[start:-2]


class TiffStream:
    """A TIFF written strip by strip, so a huge output is never held whole.

    Baseline TIFF: contiguous samples (8 or 16 bits; gray, gray+alpha, RGB,
    RGBA), deflate-compressed strips, the ICC profile and the EXIF tags
    (camera tags in the first directory, the Exif and GPS directories as
    sub-directories; layout tags never). The directory is written first with
    room for the strip table, which `close` fills in: the file must be
    seekable."""

    def __init__(self, f: BinaryIO, width: int, height: int, channels: int, bits: int,
                 icc: bytes | None = None, exif: bytes | None = None, level: int = 6):
        from PIL import Image, TiffImagePlugin, TiffTags

        self.f, self.width, self.height, self.channels, self.bits = f, width, height, channels, bits
        self.rowbytes = width * channels * bits // 8
        self.rows_per_strip = max(1, min(height, (1 << 18) // max(1, self.rowbytes)))
        n = -(-height // self.rows_per_strip)
        self.level = level
        self.pending = RowBuffer()
        self.rows = 0
        self.offsets: list[int] = []
        self.counts: list[int] = []
        ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
        if exif:
            ex = Image.Exif()
            ex.load(exif)
            for tag in set(ex) - STRUCTURAL_TAGS:
                if tag in TiffTags.TAGS_V2_GROUPS:
                    sub = dict(ex.get_ifd(tag))
                    if sub:
                        ifd[tag] = sub
                        ifd.tagtype[tag] = TiffTags.LONG
                else:
                    ifd[tag] = ex[tag]
                    if tag in getattr(ex, "tagtype", {}):
                        ifd.tagtype[tag] = ex.tagtype[tag]
        color = channels >= 3
        for tag, value, typ in (
                (256, width, TiffTags.LONG), (257, height, TiffTags.LONG),
                (258, (bits,) * channels, TiffTags.SHORT), (259, 8, TiffTags.SHORT),  # deflate
                (262, 2 if color else 1, TiffTags.SHORT), (277, channels, TiffTags.SHORT),
                (278, self.rows_per_strip, TiffTags.LONG), (284, 1, TiffTags.SHORT),
                (273, (0,) * n, TiffTags.LONG), (279, (0,) * n, TiffTags.LONG)):
            ifd[tag] = value
            ifd.tagtype[tag] = typ
        if channels in (2, 4):
            ifd[338] = 2  # unassociated alpha
            ifd.tagtype[338] = TiffTags.SHORT
        if icc:
            ifd[34675] = icc
            ifd.tagtype[34675] = TiffTags.UNDEFINED
        self.start = f.tell()
        head = b"II*\x00" + struct.pack("<I", 8)
        try:
            directory = ifd.tobytes(8)
        except Exception as e:  # a tag value the TIFF types cannot hold
            raise OutputError(f"cannot describe this image as TIFF ({type(e).__name__}: {e})") from None
        # where the two strip tables lie (tobytes has pointed the offsets
        # past the directory, where the strips start; both are overwritten)
        self.tables = {}
        for i in range(struct.unpack_from("<H", directory)[0]):
            tag, _, count, value = struct.unpack_from("<HHII", directory, 2 + 12 * i)
            if tag in (273, 279):
                self.tables[tag] = 8 + 2 + 12 * i + 8 if count * 4 <= 4 else value
        f.write(head + directory)
        self.data_start = f.tell()

    def write(self, band: np.ndarray) -> None:
        """band: (rows, width, channels) uint8 or uint16."""
        self.pending.add(band)
        while self.pending.rows >= self.rows_per_strip:
            self._strip(self.pending.take(self.rows_per_strip))

    def _strip(self, strip: np.ndarray) -> None:
        raw = np.ascontiguousarray(strip.astype("<u2") if self.bits == 16 else strip)
        data = zlib.compress(raw.tobytes(), self.level)
        pos = self.f.tell() - self.start
        if pos + len(data) > 0xFFFFFFFF:
            raise OutputError("TIFF output over 4 GB (choose --format png)")
        self.offsets.append(pos)
        self.counts.append(len(data))
        self.f.write(data)
        self.rows += strip.shape[0]

    def close(self) -> None:
        if self.pending.rows:
            self._strip(self.pending.take(self.pending.rows))
        if self.rows != self.height:
            raise OutputError(f"TIFF stream got {self.rows} of {self.height} rows")
        end = self.f.tell()
        for tag, values in ((273, self.offsets), (279, self.counts)):
            self.f.seek(self.start + self.tables[tag])
            self.f.write(struct.pack(f"<{len(values)}I", *values))
        self.f.seek(end)
