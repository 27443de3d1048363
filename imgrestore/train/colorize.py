"""Colorization training: the colorizers' models, loss and recipes.

Pairs (`tasks.colorize.ColorBatches`): the L of a colour photo in, its a*b*
(at half resolution) out, plus the ImageNet class (wnid in the file name) for
the classification head.

Loss = rebalanced L2 (or smooth-L1) on a*b*
     + foreground term of the same kind (the seed's foreground loss)
     + 0.003 x cross-entropy on the class (Iizuka et al. weight it 1/300).

The error term is "l2" (the default: the conditional mean, which is what
PSNR rewards), "log-l2" (the mean over images of the log of each image's
squared error: the benchmark averages PSNR, a log, over images, and a tint
costs a near-gray photo 6 to 11 dB where a colourful one gains 2) or
"smooth-l1" (closer to the conditional median: bolder and more often wrong;
our first shipped model used it and scored best when its chroma was halved).
A hold-out slice of the training files (`holdout`, chosen by the CRC32 of
the file name) is never trained on and is evaluated at every checkpoint, so
settings are chosen without looking at the validation sets.

* Rebalancing (against the brown/sepia average): every pixel's loss is
  weighted by the rarity of its true colour, w(ab) = 1 / ((1 - lam) p(ab) +
  lam / Q), normalized so that E_p[w] = 1, with p the smoothed a*b* histogram
  of the training set (Zhang et al. 2016; lam = `rebalance`, 1 = off).
* Foreground masks cost nothing at inference: they are derived from the
  ground-truth colour image at training time, as the pixels whose chroma
  stands out from the photo's mean chroma by more than FG_CHROMA (objects
  that carry colour against their background). The term averages over those
  pixels only, so small objects weigh as much as large backgrounds.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..color import rgb_to_lab
from ..defaults import TRAIN_COLORIZE
from ..io import list_images
from ..models.colorize import AB_BIN, AB_BINS, AB_RANGE, FusionColorNet
from ..tasks.base import checkpoint_sampler
from ..tasks.colorize import TASK, FeatureCache, load_color_images
from ..tensors import to_tensor
from .loop import TrainTask, init_from, split_holdout

BIN = AB_BIN  # a*b* histogram bin width: the bins head's
NBINS = AB_BINS  # 22 bins per axis
FG_CHROMA = 15.0  # a*b* distance from the mean chroma that marks foreground
# The two colour-keeping terms (rebalancing lambda, foreground weight) are
# off and light by default (imgrestore.defaults.TRAIN_COLORIZE, the shipped
# model's settings): stronger ones gave more vivid colours that were more
# often wrong (weights/MODEL_CARD.md, "Colorizer").
CLS_WEIGHT = 0.003
LOSSES = ("l2", "log-l2", "smooth-l1", "bins", "bins+l2")
# bins: cross-entropy of the bins head against soft targets (each true a*b*
# shared bilinearly by its four nearest bin centres), weighted by rarity when
# rebalanced (Zhang et al. 2016); bins+l2 adds the l2 term (with foreground)
# on the annealed-mean read-out, which is what the user sees
# log-l2: per-image log of the (x10, normalized) squared error; the floor is
# an a*b* error of about 1.5 units, the scale keeps the term's gradient near
# that of l2 for a typical image (error 0.05 -> 1 / 0.05 = 20-fold, /20)
LOG_EPS = 1e-3
LOG_SCALE = 0.05


def ab_bins(ab: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) a*b* -> (B, H, W) bin index."""
    q = ((ab + AB_RANGE) / BIN).long().clamp_(0, NBINS - 1)
    return q[:, 0] * NBINS + q[:, 1]


def rebalance_weights(images: list[np.ndarray], lam: float = 0.5, sample: int = 400) -> torch.Tensor:
    """(NBINS*NBINS,) pixel weights from the training set's a*b* histogram."""
    rng = random.Random(0)
    hist = torch.zeros(NBINS * NBINS, dtype=torch.float64)
    for a in rng.sample(images, min(sample, len(images))):
        small = np.array(Image.fromarray(a).resize((32, 32), Image.BILINEAR))
        lab = rgb_to_lab(to_tensor(small))
        hist += torch.bincount(ab_bins(lab[:, 1:]).flatten(), minlength=NBINS * NBINS).double()
    p = hist / hist.sum()
    # smooth with a 3x3 Gaussian on the 2-D bin grid
    g = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    k = (g[:, None] * g[None, :])[None, None]
    p = F.conv2d(p.reshape(1, 1, NBINS, NBINS), k, padding=1).flatten()
    p = p / p.sum()
    q = int((p > 0).sum())
    w = 1.0 / ((1 - lam) * p + lam / q)
    w = w / (p * w).sum()
    return w.float()


def bins_ce(z: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """(B, Q, h, w) bin logits, (B, 2, h, w) true a*b* -> (B, h, w)
    cross-entropy against soft targets: the true colour's bilinear weights on
    its four nearest bin centres."""
    u = (ab + AB_RANGE) / BIN - 0.5
    i0 = u.floor().clamp(0, NBINS - 2)
    f = (u - i0).clamp(0, 1)
    i0 = i0.long()
    logp = F.log_softmax(z, dim=1)
    ce = 0
    for da in (0, 1):
        wa = f[:, 0] if da else 1 - f[:, 0]
        for db in (0, 1):
            wb = f[:, 1] if db else 1 - f[:, 1]
            q = (i0[:, 0] + da) * NBINS + (i0[:, 1] + db)  # (B, h, w)
            ce = ce - wa * wb * logp.gather(1, q[:, None])[:, 0]
    return ce


def color_loss(pred, logits, ab, y, loss_kind: str, weights: torch.Tensor, rebalance: float,
               fg_weight: float, bins: torch.Tensor | None = None) -> torch.Tensor:
    """The training loss (module docstring) of predicted a*b* `pred` against
    the truth `ab` (both (B, 2, h, w)) and class logits against `y`; `bins`:
    the bins head's logits (the "bins" losses)."""
    if loss_kind.startswith("bins"):
        ce = bins_ce(bins, ab)
        total = (ce * weights[ab_bins(ab)]).mean() if rebalance < 1 else ce.mean()
        if loss_kind == "bins+l2":
            total = total + color_loss(pred, None, ab, y, "l2", weights, 1.0, fg_weight)
        if logits is not None and (y >= 0).any():
            total = total + CLS_WEIGHT * F.cross_entropy(logits, y, ignore_index=-100)
        return total
    if loss_kind in ("l2", "log-l2"):
        per_px = (pred / AB_RANGE - ab / AB_RANGE).square().sum(1) * 10.0  # x10: a scale like smooth-L1's
    else:
        per_px = F.smooth_l1_loss(pred / AB_RANGE, ab / AB_RANGE, reduction="none", beta=0.05).sum(1)
    per_px_w = per_px * weights[ab_bins(ab)] if rebalance < 1 else per_px
    if loss_kind == "log-l2":
        # the benchmark averages PSNR over images: minimize the mean of
        # each image's log error, which spares near-gray photos a tint
        total = torch.log(per_px_w.mean(dim=(1, 2)) + LOG_EPS).mean() * LOG_SCALE
    else:
        total = per_px_w.mean()
    if fg_weight > 0:
        mean_ab = ab.mean(dim=(2, 3), keepdim=True)
        fg = ((ab - mean_ab).norm(dim=1) > FG_CHROMA).float()  # (B, H, W)
        total = total + fg_weight * (per_px * fg).sum() / fg.sum().clamp(min=1.0)
    if logits is not None and (y >= 0).any():
        total = total + CLS_WEIGHT * F.cross_entropy(logits, y, ignore_index=-100)
    return total


def load_training(data: list[str], holdout: float, crop: int, min_zoom: float, log=print):
    """The training photos (colour ones, sized for `crop` at `min_zoom`) with
    their class labels (-100: none, ignored), and the held-out files."""
    files, held = split_holdout(list_images(data), holdout)
    images, wnids = load_color_images(files, short_side=round(crop / min_zoom) + crop // 8)
    classes = sorted({w for w in wnids if w})
    index = {w: i for i, w in enumerate(classes)}
    labels = [index[w] if w else -100 for w in wnids]
    log(f"loaded {len(images)} colour training images ({len(files) - len(images)} gray skipped), "
        f"{len(classes)} classes")
    return files, held, images, labels, classes


def evaluator(held: list[Path], val: list[str] | None):
    """(model, limit=None, files=held) -> {"holdout": summary, val folder: summary}."""
    def evaluate(m, limit=None, files=held):
        out = {}
        if files:
            out["holdout"] = TASK.evaluate(m, files, limit=limit)
        for f in val or []:
            out[Path(f).name] = TASK.evaluate(m, f, limit=limit)
        return out
    return evaluate


def make_task(data: list[str], *, width: int = 32, crop: int = 128, batch: int = 32,
              val: list[str] | None = None, seed: int = 0, loss_kind: str = "l2",
              rebalance: float = TRAIN_COLORIZE["rebalance"], fg_weight: float = TRAIN_COLORIZE["fg_weight"],
              holdout: float = TRAIN_COLORIZE["holdout"],
              min_zoom: float = 1.0, init: Path | None = None, log=print) -> TrainTask:
    if loss_kind not in LOSSES or loss_kind.startswith("bins"):
        raise ValueError(f"unknown loss {loss_kind!r} for this architecture ({', '.join(LOSSES[:3])})")
    torch.manual_seed(seed)
    files, held, images, labels, classes = load_training(data, holdout, crop, min_zoom, log)
    weights = rebalance_weights(images, lam=rebalance)
    config = dict(width=width, global_size=128, global_dim=256, classes=len(classes), mid_blocks=3)
    model = FusionColorNet(**config)
    if init:
        init_from(model, init, log)
    data_ = TASK.pairs(images, labels, crop, seed, min_zoom=min_zoom)

    sample = checkpoint_sampler(data_, batch, seed)

    def loss(m, b):
        l, ab, y = b
        pred, logits = m(l, return_logits=True)
        return color_loss(pred, logits, ab, y, loss_kind, weights, rebalance, fg_weight)

    evaluate = evaluator(held, val)

    return TrainTask(
        arch="fusion-colornet", task=TASK.name, scale=1, model=model, config=config,
        batch=sample, loss=loss, evaluate=evaluate,
        quick_eval=(lambda m: evaluate(m, limit=60)) if val or held else None,
        provenance=dict(
            data=[Path(d).name for d in data], images=len(images), crop=crop, batch=batch,
            zoom=f"crops cut at a random zoom-out in [{min_zoom}, 1]" if min_zoom < 1 else None,
            init=Path(init).name if init else None,
            classes=classes, holdout=dict(fraction=holdout, images=len(held), rule="crc32(file name) % 10000 < "
                                          "fraction x 10000"),
            loss=(f"{loss_kind}" + (f" rebalanced (lam {rebalance})" if rebalance < 1 else "")
                  + (f" + {fg_weight} x foreground {loss_kind} (|ab - mean ab| > {FG_CHROMA})" if fg_weight else "")
                  + f" + {CLS_WEIGHT} x cross-entropy"),
            optimizer="Adam(0.9, 0.99) cosine", seed=seed,
        ),
    )


# ---------------------------------------------------------------------------- on a frozen encoder

def load_encoder(model, wf) -> dict:
    """Fill a SemanticColorNet's frozen encoder from the encoder's weights
    file `wf`; returns what the colorizer's provenance says of it."""
    import hashlib

    model.encoder.load_state_dict(wf.tensors, strict=True)
    return dict(file=wf.path.name, sha256=hashlib.sha256(wf.path.read_bytes()).hexdigest(),
                source=wf.provenance.get("package"), licence=wf.provenance.get("licence"))


def make_semantic_task(data: list[str], *, width: int = 32, crop: int = 128, batch: int = 32,
                       val: list[str] | None = None, seed: int = 0, loss_kind: str = "l2",
                       rebalance: float = TRAIN_COLORIZE["rebalance"],
                       fg_weight: float = TRAIN_COLORIZE["fg_weight"],
                       holdout: float = TRAIN_COLORIZE["holdout"], min_zoom: float = 1.0,
                       init: Path | None = None, cache: Path | None = None, crops_per_image: int = 6,
                       encoder: Path | None = None, dropout: float = 0.0, quick_images: int = 150,
                       tune_tail: float = 0.0, tune_from: int = 2, log=print) -> TrainTask:
    """The colorizer on a frozen pretrained encoder (`SemanticColorNet`).
    With `cache`, the encoder's maps of `crops_per_image` crops per photo are
    computed once (`FeatureCache`); without, every step encodes its crops."""
    from .. import weights as wmod
    from ..models.colorize import SemanticColorNet, SemanticConfig
    from ..registry import component_path

    if loss_kind not in LOSSES:
        raise ValueError(f"unknown loss {loss_kind!r} ({', '.join(LOSSES)})")
    torch.manual_seed(seed)
    files, held, images, labels, classes = load_training(data, holdout, crop, min_zoom, log)
    weights_ = rebalance_weights(images, lam=rebalance)
    # the shipped encoder, or `encoder`: a file named as the component the
    # colorizer's config will name (its file name without the suffix)
    enc_name = Path(encoder).stem if encoder else SemanticConfig.encoder
    enc_wf = wmod.read(encoder or component_path(enc_name))
    config = dict(encoder=enc_name, encoder_config=enc_wf.config, width=width, global_dim=256,
                  classes=len(classes), mid_blocks=2, head="bins" if loss_kind.startswith("bins") else "ab",
                  dropout=dropout, tune_tail=tune_tail > 0, tune_from=tune_from)
    model = SemanticColorNet(**config)
    enc_info = load_encoder(model, enc_wf)
    if init:
        init_from(model, init, log)
    if tune_tail:
        tuned = sum(p.numel() for p in model.encoder.parameters() if p.requires_grad)
        log(f"tuning the encoder's blocks {model.tail_from}.. and head with the decoder ({tuned:,} parameters, "
            f"lr x {tune_tail:g})")
    source = TASK.pairs(images, labels, crop, seed, min_zoom=min_zoom)
    if cache:
        count = crops_per_image * len(images)
        key = dict(files=len(files), crop=crop, min_zoom=min_zoom, seed=seed, encoder=enc_info["sha256"],
                   data=[str(d) for d in data], holdout=holdout)
        fc = FeatureCache(Path(cache), model, source, count, key, log)
        sample = checkpoint_sampler(fc, batch, seed)

        def loss(m, b):
            l, ab, y, feats = b
            pred, logits, bins = m(l, feats=feats, return_bins=True)
            return color_loss(pred, logits, ab, y, loss_kind, weights_, rebalance, fg_weight, bins)
    else:
        sample = checkpoint_sampler(source, batch, seed)

        def loss(m, b):
            l, ab, y = b
            pred, logits, bins = m(l, return_bins=True)
            return color_loss(pred, logits, ab, y, loss_kind, weights_, rebalance, fg_weight, bins)

    evaluate = evaluator(held, val)

    # the periodic check: `quick_images` held-out photos taken evenly from the
    # whole slice (every folder), none smaller than a training crop
    sized = [f for f in held if min(Image.open(f).size) >= crop]
    quick = sized[::max(1, len(sized) // quick_images)][:quick_images]

    return TrainTask(
        arch="semantic-colornet", task=TASK.name, scale=1, model=model, config=config,
        batch=sample, loss=loss, evaluate=evaluate,
        quick_eval=(lambda m: evaluate(m, files=quick)) if val or held else None,
        lr_scales=(lambda m: {"encoder.": tune_tail}) if tune_tail else None,
        provenance=dict(
            encoder=enc_info,
            data=[Path(d).name for d in data], images=len(images), crop=crop, batch=batch,
            zoom=f"crops cut at a random zoom-out in [{min_zoom}, 1]" if min_zoom < 1 else None,
            features=(f"encoder maps cached for {crops_per_image} crops per photo (seed {seed})" if cache
                      else "encoded every step"),
            init=Path(init).name if init else None, dropout=dropout,
            tune_tail=(f"the encoder's blocks {model.tail_from}.. (after its 1/{4 << tune_from} map) and head "
                       f"retrained with the decoder at {tune_tail:g} x its learning rate (kept in this file)")
            if tune_tail else None,
            classes=classes, holdout=dict(fraction=holdout, images=len(held), rule="crc32(file name) % 10000 < "
                                          "fraction x 10000", periodic_check=f"{len(quick)} of them"),
            loss=(f"{loss_kind}" + (f" rebalanced (lam {rebalance})" if rebalance < 1 else "")
                  + (f" + {fg_weight} x foreground {loss_kind} (|ab - mean ab| > {FG_CHROMA})" if fg_weight else "")
                  + f" + {CLS_WEIGHT} x cross-entropy"),
            optimizer="Adam(0.9, 0.99) cosine", seed=seed,
        ),
    )
