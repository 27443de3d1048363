"""run(restorer, jobs, options) -> iterator of results. No printing.

Decoding of the next input and encoding/writing of the previous output run in
background threads while the network works on the current image (Pillow,
OpenCV and torch release the GIL), with at most one image in flight on each
side so memory stays flat over any number of files.
"""

from __future__ import annotations

import io as _io
import os
import re
import sys
import time
import traceback
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from . import io
from .errors import ImgRestoreError, NameCollision, OutputError, OutputExists


# outputs at least this large are streamed band by band, in the formats
# whose writer takes bands
STREAM_MIN_PIXELS = 16_000_000


# the input extensions whose spelling an output in the same format keeps
# (.jpeg, .JPG, .tiff); others (.jfif) get the format's own
KEPT_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"}


@dataclass
class Options:
    output: str | None = None  # None: next to the input; "-": stdout; else file or folder
    output_is_dir: bool = False  # many inputs, or -o names a folder
    suffix: str = ""  # added to the stem next to the input, e.g. "_x4"
    dir_suffix: str = ""  # added to the stem inside an output folder (only if asked for)
    format: str = "auto"  # png | jpg | webp | tiff | auto (the input's, or -o's extension)
    quality: int = 95
    png_level: int | None = None  # PNG zlib level 0-9; None: the fast writer (io.PngStream)
    tile: int | None = 256
    overlap: int | None = None  # None: the model's receptive radius (exact tiling)
    overwrite: bool = False
    max_pixels: int = io.DEFAULT_MAX_PIXELS
    max_output_pixels: int = io.DEFAULT_MAX_OUTPUT_PIXELS
    debug: bool = False
    on_tile: Callable[[int, int], None] | None = None


@dataclass
class Result:
    input: str
    status: str  # done | skipped | failed
    output: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    size_in: tuple[int, int] | None = None
    size_out: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)
    resize: dict | None = None  # any scale, a width or a height: the model's scale and the resize
    # notes of a kind said once for a whole batch (`Restorer.input_notes`)
    batch_notes: list[str] = field(default_factory=list)

    def record(self) -> dict:
        rec = {k: v for k, v in self.__dict__.items() if v not in (None, []) and k != "batch_notes"}
        if self.batch_notes:
            rec["notes"] = self.notes + self.batch_notes
        return rec


def target(job: io.Job, o: Options) -> tuple[Path | str, str]:
    """(output path or "-", format) for a job, decided before decoding (from
    the source's extension) so that finished outputs are skipped cheaply."""
    src_ext = Path(str(job.rel)).suffix
    src_fmt = io.EXT_FORMAT.get(src_ext.lower(), "png")
    if o.output == "-" or (job.source == "-" and o.output is None):
        return "-", io.output_format(o.format, src_fmt, None)
    if o.output is not None and not o.output_is_dir:
        p = Path(o.output)
        return p, io.output_format(o.format, src_fmt, p)
    fmt = io.output_format(o.format, src_fmt, None)
    # the input's own spelling (.jpeg, .JPG, .tiff) where the format is kept
    ext = src_ext if src_fmt == fmt and src_ext.lower() in KEPT_EXTS else io.FORMATS[fmt]
    if o.output is None:
        src = Path(job.source)
        return src.with_name(f"{src.stem}{o.suffix}{ext}"), fmt
    rel = job.rel
    return Path(o.output) / rel.parent / f"{rel.stem}{o.dir_suffix}{ext}", fmt


def default_suffix(task_suffix: str, model: str | None = None) -> str:
    """The suffix of outputs written next to their input: the task's
    (`_x4`), and the model's name when it is not the task's default one
    (`_x4_x4-small`), so that outputs of different models do not take each
    other's names (and a second model's run is not skipped as done)."""
    if not model:
        return task_suffix
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "-", model).strip("-.") or "model"
    return f"{task_suffix}_{safe}"


def _key(p: Path | str) -> str:
    return os.path.normcase(os.path.abspath(p))


def check_names(jobs: list[io.Job], o: Options) -> None:
    """Refuse, before any work, a batch in which two inputs would be written
    to one output name (a.png and a.bmp -> a_x2.png), or, with overwrite, in
    which an output would replace another input of the same batch. Raises
    `NameCollision` naming both inputs."""
    seen: dict[str, io.Job] = {}
    sources = {_key(j.source): j for j in jobs if j.error is None and j.source != "-"}
    for job in jobs:
        if job.error is not None:
            continue
        out, _ = target(job, o)
        if out == "-":
            continue
        k = _key(out)
        if k in seen:
            raise NameCollision(f"{io.shown(seen[k].name)} and {io.shown(job.name)} would both be written "
                                f"to {io.shown(out)}; give them different names or process them separately")
        seen[k] = job
        other = sources.get(k)
        if o.overwrite and other is not None and other is not job:
            raise NameCollision(f"the output of {io.shown(job.name)} would replace "
                                f"{io.shown(other.name)}, another input of this run")


def _exists(p: Path | str) -> bool:
    try:
        return Path(p).exists()
    except OSError:  # a name too long, a folder we may not search: the write will say
        return False


def _same_file(a: Path | str, b: Path | str) -> bool:
    if a == "-" or b == "-":
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _describe(e: BaseException, debug: bool) -> str:
    if isinstance(e, ImgRestoreError):
        return str(e)
    if isinstance(e, MemoryError):
        return "out of memory (try a smaller --tile)"
    msg = f"internal error: {type(e).__name__}: {e}"
    if debug:
        msg += "\n" + "".join(traceback.format_exception(e))
    return msg


def _precheck(job: io.Job, out: Path | str | None, o: Options) -> tuple[str, str] | None:
    """(status, reason) for a job that must not be processed, else None."""
    if job.error:
        return "failed", job.error
    if _same_file(out, job.source):
        return "failed", "output would replace the input (choose -o or --suffix)"
    if out != "-" and len(os.fsencode(Path(out).name)) > 255:
        return "failed", (f"the output name would be {len(os.fsencode(Path(out).name))} bytes, over the "
                          "255 a file system takes (give -o, or a shorter --suffix)")
    if out != "-" and not o.overwrite and _exists(out):
        return "skipped", "output exists (use --overwrite to redo it)"
    return None


# the names of `run`'s threads (their prefix): `finish_threads` finds them by it
READER_THREADS = "decode"
WRITER_THREADS = "encode"


def finish_threads(limit: float = 60.0) -> None:
    """Wait (at most `limit` seconds in all) for `run`'s threads still
    running, an output being encoded and written above all, before a
    process that leaves by os._exit (an interrupted command) cuts a writer
    mid-file and leaves its temporary file. `run` joins its threads when its
    executors close, but an interrupt that lands while an executor starts
    its thread (between the start and the executor's bookkeeping) leaves
    that thread unjoined; seen once on a loaded machine. (The stream
    encoders' threads only make bytes for a file whose temporary file the
    main thread removes itself.)"""
    import threading

    deadline = time.monotonic() + limit
    for t in threading.enumerate():
        if (t is not threading.current_thread() and t.name.startswith((READER_THREADS, WRITER_THREADS))
                and t.is_alive()):
            t.join(max(0.0, deadline - time.monotonic()))


def run(restorer, jobs: Iterable[io.Job], o: Options) -> Iterator[Result]:
    """Results, one per job, in order. Raises `NameCollision` (before any
    work) if two jobs would write one output."""
    jobs = list(jobs)
    check_names(jobs, o)
    with ThreadPoolExecutor(1, thread_name_prefix=READER_THREADS) as readers, \
            ThreadPoolExecutor(1, thread_name_prefix=WRITER_THREADS) as writers:
        reads: dict[int, Future] = {}
        writes: deque[tuple[Result, Future]] = deque()

        def checker(i: int):
            fmt = target(jobs[i], o)[1]
            return lambda w, h: _check_output(*restorer.output_size(w, h), fmt, o)

        def prefetch(i: int) -> None:
            # queue the decode of job i if it will be needed
            if i < len(jobs) and i not in reads and jobs[i].error is None and jobs[i].source != "-":
                out, _ = target(jobs[i], o)
                if o.overwrite or out == "-" or not _exists(out):
                    reads[i] = readers.submit(io.read, jobs[i], o.max_pixels, checker(i))

        def drain(block: bool) -> Iterator[Result]:
            while writes and (block or writes[0][1].done()):
                res, fut = writes.popleft()
                try:
                    fut.result()
                except OutputExists:
                    # another run (e.g. a concurrent one) finished this output first
                    res.status, res.reason = "skipped", "output exists (written by another run)"
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as e:  # noqa: BLE001 - reported per file
                    res.status, res.reason = "failed", _describe(e, o.debug)
                yield res

        for i, job in enumerate(jobs):
            t0 = time.perf_counter()
            res = Result(job.name, "done")
            out, fmt = target(job, o) if job.error is None else (None, None)
            if out is not None:
                res.output = str(out) if out != "-" else "<stdout>"
            early = _precheck(job, out, o)
            if early:
                res.status, res.reason = early
                reads.pop(i, None)  # a decode prefetched before the output appeared
                yield from drain(True)
                yield res
                continue
            prefetch(i)
            prefetch(i + 1)  # decode the next input while this one computes
            try:
                pic = reads.pop(i).result() if i in reads else io.read(job, o.max_pixels, checker(i))
                res.size_in = pic.size
                res.notes = list(pic.notes)
                res.batch_notes = restorer.input_notes(pic)
                w, h = pic.size
                if out == "-" and job.source == "-" and o.format in ("auto", "same"):
                    fmt = pic.format if pic.format in io.FORMATS else "png"  # stdin's format, sniffed
                if fmt == "jpg" and pic.alpha is not None and int(pic.alpha.min()) < np.iinfo(pic.alpha.dtype).max:
                    res.notes.append("transparency dropped: JPEG has none (--format png, webp or tiff keeps it)")
                res.resize = restorer.plan(w, h)
                ow, oh = restorer.output_size(w, h)
                if fmt in io.STREAM_FORMATS and out != "-" and ow * oh >= STREAM_MIN_PIXELS:
                    yield from drain(True)
                    res.size_out = _stream(restorer, pic, Path(out), fmt, o)
                    res.seconds = time.perf_counter() - t0
                    yield res
                    continue
                result = restorer.restore_picture(pic, o.tile, o.overlap, o.on_tile)
                res.size_out = result.size
                del pic
            except BaseException as e:  # noqa: BLE001 - one bad input never stops a batch
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                if isinstance(e, OutputExists):
                    res.status, res.reason = "skipped", "output exists (written by another run)"
                else:
                    res.status, res.reason = "failed", _describe(e, o.debug)
                res.seconds = time.perf_counter() - t0
                yield from drain(True)
                yield res
                continue
            yield from drain(True)  # at most one output being encoded at a time
            writes.append((res, writers.submit(_write, result, out, fmt, o, res, t0)))
            yield from drain(False)
        yield from drain(True)


def _write(pic: io.Picture, out: Path | str, fmt: str, o: Options, res: Result, t0: float) -> None:
    if out == "-":
        write_stdout(io.encode(pic, fmt, o.quality, png_level=o.png_level))
    else:
        io.write_atomic(lambda f: io.encode(pic, fmt, o.quality, f, o.png_level), Path(out), o.overwrite)
    res.seconds = time.perf_counter() - t0


def _check_output(w: int, h: int, fmt: str, o: Options) -> None:
    """Refuse, before the network runs, an output over --max-output-pixels
    or larger than its format can hold."""
    if w * h > o.max_output_pixels:
        raise OutputError(f"the output would be {w}x{h}, {io.pixels_text(w * h)}, over the output limit of "
                          f"{io.pixels_text(o.max_output_pixels)} (raise it with --max-output-pixels)")
    side = io.MAX_SIDE.get(fmt)
    if side and max(w, h) > side:
        raise OutputError(f"the output would be {w}x{h}, and {fmt.upper()} holds at most {side:,} pixels a "
                          "side (choose --format png or tiff)")


def write_stdout(data: bytes) -> None:
    """All of `data` to stdout, or `OutputError`: a short write (a full disk,
    a file size limit) is an error, never a cut image reported as done."""
    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError, _io.UnsupportedOperation):
        fd = None
    if fd is None:  # not a real file (an in-process test runner)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    view = memoryview(data)
    try:
        while view:
            n = os.write(fd, view[:1 << 20])
            if n <= 0:
                raise OSError(0, "short write")
            view = view[n:]
    except OSError as e:
        raise OutputError(f"cannot write to stdout ({e.strerror or e}); "
                          f"{len(data) - len(view)} of {len(data)} bytes written") from None


def _stream(restorer, pic: io.Picture, out: Path, fmt: str, o: Options) -> tuple[int, int]:
    """Run the network band by band straight into a PNG, TIFF or JPEG: the
    output is never held whole (a 24000x18000 result is 1.3 GB as 8-bit RGB)."""
    desc, bands = restorer.picture_bands(pic, o.tile, o.overlap, o.on_tile)
    h, w, c = desc.pixels.shape
    bits = 16 if desc.pixels.dtype.itemsize == 2 else 8
    widen = fmt == "tiff" and bits == 16 and c == 1 and desc.has_alpha  # as io.encode writes it
    c = 3 if widen else c
    channels = c + (1 if desc.has_alpha else 0)

    def writer(f):
        stream = io.open_stream(fmt, f, w, h, channels, bits, desc.icc, desc.exif, o.quality,
                                o.png_level)
        for _, band, alpha in bands:
            band = np.repeat(band, 3, axis=2) if widen else band
            stream.write(np.dstack([band, alpha]) if alpha is not None else band)
        stream.close()

    io.write_atomic(writer, out, o.overwrite)
    return w, h


__all__ = ["Options", "Result", "check_names", "default_suffix", "finish_threads", "run", "target"]
