"""Shared fixtures: tiny random models and generated images (no data files)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgrestore import weights
from imgrestore.models.sr import ECBSR


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def tiny_sr_file(path: Path, scale: int = 2, channels: int = 4, blocks: int = 1, task: str = "upscale") -> Path:
    config = dict(scale=scale, colors=3, channels=channels, blocks=blocks, mid_mult=1.0)
    model = randomize(ECBSR(**config))
    weights.save(path, model.state_dict(), arch="ecbsr", config=config, task=task,
                 scale=scale, provenance={"note": "random test model"})
    return path


@pytest.fixture(scope="session")
def tiny_x2(tmp_path_factory) -> Path:
    return tiny_sr_file(tmp_path_factory.mktemp("models") / "tiny-x2.safetensors", 2)


@pytest.fixture(scope="session")
def tiny_x3(tmp_path_factory) -> Path:
    return tiny_sr_file(tmp_path_factory.mktemp("models") / "tiny-x3.safetensors", 3)


@pytest.fixture(scope="session")
def tiny_color(tmp_path_factory) -> Path:
    from imgrestore.models.colorize import FusionColorNet

    cfg = dict(width=8, global_size=32, global_dim=16, classes=3, mid_blocks=1)
    model = randomize(FusionColorNet(**cfg), std=0.3)
    path = tmp_path_factory.mktemp("models") / "tiny-color.safetensors"
    weights.save(path, model.state_dict(), arch="fusion-colornet", config=cfg, task="colorize", scale=1)
    return path


# every operation and attention of the restoration family, in three small cells
TINY_CELLS = [{"ops": ["conv3", "dil3"], "attention": "channel", "connect": "body"},
              {"ops": ["sep3", "conv1", "skip"], "attention": "spatial", "connect": "out"},
              {"ops": ["conv3"], "attention": "pixel", "connect": "body"}]


def tiny_restore_file(path: Path, task: str, channels: int = 4, seed: int = 0) -> Path:
    from imgrestore.models.restore import JSNet

    config = dict(task=task, colors=3, channels=channels, cells=TINY_CELLS, fuse=True)
    model = randomize(JSNet(**config), seed=seed, std=0.1)
    weights.save(path, model.state_dict(), arch="jsnet", config=config, task=task, scale=1,
                 provenance={"note": "random test model"})
    return path


@pytest.fixture(scope="session")
def tiny_denoise(tmp_path_factory) -> Path:
    return tiny_restore_file(tmp_path_factory.mktemp("models") / "tiny-denoise.safetensors", "denoise")


@pytest.fixture(scope="session")
def tiny_deblock(tmp_path_factory) -> Path:
    return tiny_restore_file(tmp_path_factory.mktemp("models") / "tiny-deblock.safetensors", "deblock", seed=1)


# task -> the fixture above that writes a tiny random model of it
TINY_MODELS = {"upscale": "tiny_x2", "colorize": "tiny_color", "denoise": "tiny_denoise",
               "deblock": "tiny_deblock"}


@pytest.fixture
def tiny_model(request):
    """A task's name -> the path of a tiny random model of that task."""
    def get(task: str) -> Path:
        assert task in TINY_MODELS, f"task {task!r} has no tiny model: add a fixture and a TINY_MODELS entry"
        return request.getfixturevalue(TINY_MODELS[task])
    return get


def noise_image(h: int, w: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    c = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    a = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    # smooth it a little so it looks like a photo to the encoders
    return Image.fromarray(a[..., 0] if c == 1 else a, mode)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def cli():
    """Run the CLI in-process; returns (exit_code, stdout_bytes, stderr_text)."""
    from click.testing import CliRunner

    from imgrestore.cli import cli as group

    def run(*args, input: bytes | None = None):
        runner = CliRunner()
        res = runner.invoke(group, [str(a) for a in args], input=input, catch_exceptions=False)
        return res.exit_code, res.stdout_bytes, res.stderr

    return run


# ---------------------------------------------------------------------------- golden outputs

def pytest_addoption(parser):
    parser.addoption("--regen-golden", action="store_true", default=False,
                     help="rewrite tests/golden/*.npz from today's outputs (those tests are then "
                          "skipped); without it a missing golden is a failure")


@pytest.fixture
def regen_golden(request) -> bool:
    """True when run with --regen-golden: golden tests rewrite their files and skip."""
    return bool(request.config.getoption("--regen-golden"))


def tiff16(samples: np.ndarray, big: bool = False) -> bytes:
    """An uncompressed little-endian TIFF (classic or BigTIFF) of 16-bit
    samples (H, W, S); S = 2 is gray + unassociated alpha, a layout Pillow
    does not decode (tifffile reads these bytes back as written)."""
    import struct

    h, w, n = samples.shape
    pix = samples.astype("<u2").tobytes()
    bits = struct.pack("<" + "H" * n, *([16] * n)).ljust(8 if big else 4, b"\0")
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, n, bits), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, None),
            (277, 3, 1, n), (278, 3, 1, h), (279, 4, 1, len(pix)), (284, 3, 1, 1), (338, 3, 1, 2)]
    head, entry, cfmt, vfmt, vsize = (16, 20, "<Q", "<Q", 8) if big else (8, 12, "<H", "<I", 4)
    data_at = head + struct.calcsize(cfmt) + entry * len(tags) + vsize
    out = bytearray(b"II+\0" + struct.pack("<HHQ", 8, 0, 16) if big else b"II*\0" + struct.pack("<I", 8))
    out += struct.pack(cfmt, len(tags))
    for tag, typ, cnt, val in tags:
        out += struct.pack("<HH", tag, typ) + struct.pack(vfmt, cnt)
        if isinstance(val, bytes):
            out += val
        else:
            val = data_at if val is None else val
            out += struct.pack("<H", val).ljust(vsize, b"\0") if typ == 3 else struct.pack(vfmt, val)
    out += b"\0" * vsize + pix
    return bytes(out)
