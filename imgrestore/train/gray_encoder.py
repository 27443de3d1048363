"""Teach the colorizer's pretrained encoder to see gray photos as colour ones.

EfficientNet-Lite0 was trained on colour photos; the colorizer only ever
shows it gray ones, and gray costs it (its class agreement with itself on
the colour photo drops, and its deep maps move). Measured before this step:
the shipped decoder fed the encoder's 1/32 and head maps *of the colour
photo* gains +0.97 dB over gray on the colorizer's hold-out, against +0.76
with the maps of the gray photo, with no retraining.

So the blocks after a cut (by default every block after the 1/16 tap, plus
the head: the maps the decoder's fusion and global vector read) are
fine-tuned so that, from the gray photo, they give what the frozen original
gives from the colour photo (feature distillation, the teacher being the
same network on colour):

    loss = |s32 - c32|^2 / var(c32) + |head(s32) - head(c32)|^2 / var(head(c32))
           + KL(softmax(fc(pool head(c32))) || softmax(fc(pool head(s32))))

The blocks before the cut stay exactly the source's, so the maps the
decoder's skips read at 1/4, 1/8 and 1/16 do not change. Crops are encoded
once below the cut (gray) and above it (colour, the target), and kept as
float16 memory maps: a step runs only the tail.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import weights
from ..defaults import TRAIN_COLORIZE
from ..io import list_images
from ..models.encoder import EfficientLite
from ..tasks.base import checkpoint_sampler
from .loop import TrainTask, split_holdout


def gray_of(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) the gray the colorizer
    gives its encoder (L of the photo, as sRGB gray), in [0, 1]."""
    from ..color import l_to_gray, rgb_to_lab

    return l_to_gray(rgb_to_lab(rgb)[:, :1])


class RGBCrops:
    """Random square crops of colour photos, at a random zoom-out in
    [min_zoom, 1] and a random horizontal flip: (B, 3, crop, crop) in [0, 1]."""

    def __init__(self, images: list[np.ndarray], crop: int, seed: int, min_zoom: float):
        self.images, self.crop, self.min_zoom = images, crop, min_zoom
        self.rng = random.Random(seed)

    def batch(self, n: int) -> torch.Tensor:
        from ..tasks.colorize import zoom_crop

        out = [zoom_crop(self.images[self.rng.randrange(len(self.images))], self.rng, self.crop, self.min_zoom)
               for _ in range(n)]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


def below(enc: EfficientLite, x: torch.Tensor, cut: int, gray: bool) -> torch.Tensor:
    """The frozen part: stem and blocks [0, cut) of normalized input."""
    x = F.relu6(enc.stem(x, enc.stem.weight.sum(1, keepdim=True) if gray else None))
    for b in enc.blocks[:cut]:
        x = b(x)
    return x


def above(enc: EfficientLite, x: torch.Tensor, cut: int) -> torch.Tensor:
    """Blocks [cut, end): the last tap's map (the input of the head)."""
    for b in enc.blocks[cut:]:
        x = b(x)
    return x


def head_and_logits(enc: EfficientLite, x32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = F.relu6(enc.head(x32))
    return h, enc.fc(h.mean(dim=(2, 3)))


class GrayColourCache:
    """`count` crops: the gray photo's map at the cut and the colour photo's
    last-tap map from the frozen source encoder, as float16 memory maps in
    `folder` (rebuilt when `key` changes)."""

    def __init__(self, folder: Path, source_enc: EfficientLite, crops: RGBCrops, count: int, cut: int,
                 key: dict, log=print, chunk: int = 32):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.count = count
        with torch.no_grad():
            g, c = self._encode(source_enc, crops.batch(1), cut)
        key = dict(key, count=count, cut=cut, shapes=[list(g.shape[1:]), list(c.shape[1:])])
        done = folder / "key.json"
        fresh = not (done.is_file() and json.loads(done.read_text()) == key)
        mode = "w+" if fresh else "r"
        self.gray = np.lib.format.open_memmap(folder / "gray_cut.npy", mode=mode, dtype=np.float16,
                                              shape=(count, *g.shape[1:]))
        self.colour = np.lib.format.open_memmap(folder / "colour_tap.npy", mode=mode, dtype=np.float16,
                                                shape=(count, *c.shape[1:]))
        if fresh:
            done.unlink(missing_ok=True)
            t0 = time.time()
            for i in range(0, count, chunk):
                n = min(chunk, count - i)
                with torch.no_grad():
                    g, c = self._encode(source_enc, crops.batch(n), cut)
                self.gray[i:i + n] = g.numpy().astype(np.float16)
                self.colour[i:i + n] = c.numpy().astype(np.float16)
                if (i // chunk) % 50 == 0:
                    log(f"encoding crops: {i + n}/{count} ({time.time() - t0:.0f} s)")
            self.gray.flush()
            self.colour.flush()
            done.write_text(json.dumps(key))
            log(f"encoded {count} crops into {folder} in {time.time() - t0:.0f} s")
        else:
            log(f"reusing the {count} encoded crops in {folder}")
        self.rng = random.Random(0)

    @staticmethod
    def _encode(enc: EfficientLite, rgb: torch.Tensor, cut: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = below(enc, enc.normalize(gray_of(rgb) * 255.0), cut, gray=True)
        c = above(enc, below(enc, enc.normalize(rgb * 255.0), cut, gray=False), cut)
        return g, c

    def take(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(self.gray[idx].astype(np.float32)),
                torch.from_numpy(self.colour[idx].astype(np.float32)))

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.take(sorted(self.rng.randrange(self.count) for _ in range(n)))


class GrayLoss:
    """The distillation loss, its two feature terms scaled by the teacher's
    variance (measured once on the first cached crops)."""

    def __init__(self, teacher: EfficientLite, sample_colour: torch.Tensor):
        self.teacher = teacher
        with torch.no_grad():
            h, _ = head_and_logits(teacher, sample_colour)
        self.v32 = float(sample_colour.var())
        self.vhead = float(h.var())

    def terms(self, student: EfficientLite, gray_cut: torch.Tensor, colour_tap: torch.Tensor,
              cut: int) -> dict[str, torch.Tensor]:
        s32 = above(student, gray_cut, cut)
        sh, sz = head_and_logits(student, s32)
        with torch.no_grad():
            th, tz = head_and_logits(self.teacher, colour_tap)
        return dict(
            tap=F.mse_loss(s32, colour_tap) / self.v32,
            head=F.mse_loss(sh, th) / self.vhead,
            kl=F.kl_div(F.log_softmax(sz, 1), F.log_softmax(tz, 1), log_target=True, reduction="batchmean"),
            agree=(sz.argmax(1) == tz.argmax(1)).float().mean(),
        )


def measure(student: EfficientLite, loss: GrayLoss, cache: GrayColourCache, cut: int, batch: int = 64) -> dict:
    """Mean of each term over all of `cache` (the held-out crops)."""
    sums: dict[str, float] = {}
    with torch.no_grad():
        for i in range(0, cache.count, batch):
            idx = list(range(i, min(cache.count, i + batch)))
            t = loss.terms(student, *cache.take(idx), cut)
            for k, v in t.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
    return {k: round(v / cache.count, 4) for k, v in sums.items()}


def make_gray_encoder_task(data: list[str], *, encoder: Path, cache: Path, crop: int = 192, batch: int = 32,
                           crops_per_image: int = 2, holdout: float = TRAIN_COLORIZE["holdout"], held_crops: int = 512,
                           min_zoom: float = 0.5, cut: int | None = None, seed: int = 0,
                           log=print) -> TrainTask:
    """Fine-tune `encoder`'s blocks from `cut` on (default: after the 1/16
    tap) so its maps of gray crops match its original maps of the colour
    crops. The hold-out is the colorizer's (same rule, same fraction)."""
    from ..tasks.colorize import load_color_images

    torch.manual_seed(seed)
    src = weights.read(encoder)
    if src.arch != "efficientnet-lite":
        raise ValueError(f"{encoder}: not an EfficientNet-Lite encoder file (arch {src.arch!r})")
    teacher, student = EfficientLite(**src.config), EfficientLite(**src.config)
    for m in (teacher, student):
        m.load_state_dict(src.tensors)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    cut = student.taps[2] + 1 if cut is None else cut
    if not 0 < cut < len(student.blocks):
        raise ValueError(f"cut {cut} outside the encoder's blocks 1..{len(student.blocks) - 1}")
    frozen = 0
    for name, p in student.named_parameters():
        keep = name.startswith("stem.") or (name.startswith("blocks.") and int(name.split(".")[1]) < cut) \
            or name.startswith("fc.")
        p.requires_grad_(not keep)
        frozen += p.numel() if keep else 0
    tuned = sum(p.numel() for p in student.parameters() if p.requires_grad)
    log(f"fine-tuning blocks {cut}..{len(student.blocks) - 1} and the head: {tuned:,} parameters "
        f"({frozen:,} frozen)")

    files, held = split_holdout(list_images(data), holdout)
    short = round(crop / min_zoom) + crop // 8
    images, _ = load_color_images(files, short_side=short)
    held_images, _ = load_color_images(held, short_side=short)
    if not images or not held_images:
        raise ValueError(f"need colour photos both to train on and to hold out (got {len(images)} and "
                         f"{len(held_images)}; hold-out fraction {holdout})")
    log(f"{len(images)} colour training photos, {len(held_images)} held out")
    sha = hashlib.sha256(Path(encoder).read_bytes()).hexdigest()
    key = dict(encoder=sha,
               data=[str(d) for d in data], files=len(files), crop=crop, min_zoom=min_zoom, seed=seed,
               holdout=holdout)
    train_cache = GrayColourCache(Path(cache) / "train", teacher, RGBCrops(images, crop, seed, min_zoom),
                                  crops_per_image * len(images), cut, key, log)
    held_cache = GrayColourCache(Path(cache) / "held", teacher, RGBCrops(held_images, crop, 10_000 + seed,
                                                                         min_zoom),
                                 held_crops, cut, dict(key, part="held"), log)
    lossf = GrayLoss(teacher, held_cache.take(list(range(min(256, held_cache.count))))[1])
    before = measure(student, lossf, held_cache, cut)
    log(f"held-out crops before fine-tuning: {json.dumps(before)}")

    def loss(m, b):
        t = lossf.terms(m, *b, cut)
        return t["tap"] + t["head"] + t["kl"]

    prov = {k: v for k, v in src.provenance.items() if k in ("licence", "origin", "package", "source_file",
                                                            "source_sha256", "input", "batch_norm")}
    prov.update(
        derived_from=dict(file=Path(encoder).name, sha256=sha, check=src.provenance.get("check")),
        fine_tuned=(f"blocks {cut}..{len(student.blocks) - 1} and the head ({tuned:,} parameters) so that their "
                    "maps of the gray photo match the source's maps of the colour photo; stem, earlier blocks "
                    "and fc unchanged"),
        loss="mse(1/32 map)/var + mse(head map)/var + KL(class scores), teacher: the source encoder on colour",
        data=[Path(d).name for d in data], images=len(images), crop=crop, zoom=min_zoom, batch=batch,
        crops=f"{crops_per_image} per photo, encoded once (seed {seed})", seed=seed, cut=cut,
        holdout=dict(fraction=holdout, images=len(held_images), crops=held_crops, before=before),
        optimizer="Adam(0.9, 0.99) cosine",
    )
    return TrainTask(
        arch="efficientnet-lite", task=src.task, scale=1, model=student, config=src.config,
        batch=checkpoint_sampler(train_cache, batch, seed), loss=loss,
        evaluate=lambda m: {"holdout": measure(m, lossf, held_cache, cut), "before": before},
        quick_eval=lambda m: measure(m, lossf, held_cache, cut), provenance=prov,
    )
