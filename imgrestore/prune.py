"""Channel pruning: global-local channel attention (GLCA) scoring and
least-squares weight compensation (seed: the lightweight colorization work's
pruning algorithm).

1. Score. A GLCA module is attached after every prunable activation. It
   computes two descriptors of each channel: a local one (a depthwise 3x3
   conv, pooled) and a global one, the same small kernel applied after a
   shuffle-reorder that interleaves the blocks of a g x g grid, so that pixels
   H/g apart become neighbours and a 3x3 kernel sees long-range context. A
   small fully connected layer turns both into a per-channel gate in (0, 1)
   that multiplies the feature map. With the network frozen, the gates are
   fitted briefly on calibration pairs of the model's own task under the task
   loss plus an L1 pressure towards closing; a channel's importance is its
   mean gate. Then the modules are removed. (`criterion="l1"`: importance is
   the L1 norm of the filter that makes the channel, the classic baseline.)
2. Remove the lowest-importance channels of every prunable layer (the same
   ratio everywhere, so parameters and MACs fall as asked).
3. Compensate. Layer by layer, the next convolution is refitted by ridge
   regression so that, fed with the *pruned* network's activations, it
   reproduces the *unpruned* network's pre-activations on the calibration
   data: the kept channels absorb what the removed ones contributed, and the
   error of earlier layers is corrected as it goes.
4. Optionally fine-tune (`steps`).

Re-parameterizable models are pruned after folding: the deployed form is a
plain chain of 3x3 convolutions, so the only dependency is "a layer's output
channels are the next layer's input channels"; the identity branch of a
training-form block would otherwise tie a layer's input and output channels
together. The tail's outputs feed the pixel shuffle in groups of scale**2 and
are never pruned.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class GLCA(nn.Module):
    """Global-local channel attention for a (B, C, H, W) map -> gates (B, C)."""

    def __init__(self, c: int, grid: int = 4):
        super().__init__()
        self.grid = grid
        self.local = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.glob = nn.Conv2d(c, c, 3, padding=1, groups=c)
        hidden = max(4, c // 2)
        self.fc = nn.Sequential(nn.Linear(2 * c, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, c))
        nn.init.zeros_(self.fc[2].weight)
        nn.init.constant_(self.fc[2].bias, 3.0)  # gates start open (sigmoid(3) = 0.95)

    def shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """Interleave the g x g blocks: pixels H/g apart become neighbours."""
        b, c, h, w = x.shape
        g = self.grid
        h2, w2 = h - h % g, w - w % g
        x = x[:, :, :h2, :w2].reshape(b, c, g, h2 // g, g, w2 // g)
        return x.permute(0, 1, 3, 2, 5, 4).reshape(b, c, h2, w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.local(x).abs().mean(dim=(2, 3))
        glob = self.glob(self.shuffle(x)).abs().mean(dim=(2, 3))
        return torch.sigmoid(self.fc(torch.cat([local, glob], dim=1)))  # (B, C)


# ---------------------------------------------------------------------------- chains

@dataclass
class Chain:
    """A model seen as a chain of convs with an activation after each but the
    last: output channels of convs[i] (i < last) are prunable."""

    convs: list[nn.Conv2d]
    acts: list[nn.Module]  # PReLU(c) or parameter-free


def ecbsr_chain(model) -> Chain:
    model.reparameterize()
    return Chain(list(model.layers), list(model.acts))


def _select(conv: nn.Conv2d, keep: torch.Tensor, dim: int) -> None:
    """Keep `keep` channels of a conv along out (0) or in (1) dimension."""
    with torch.no_grad():
        conv.weight = nn.Parameter(conv.weight.index_select(dim, keep).clone())
        if dim == 0:
            conv.bias = nn.Parameter(conv.bias.index_select(0, keep).clone())
            conv.out_channels = len(keep)
        else:
            conv.in_channels = len(keep)


def _select_act(act: nn.Module, keep: torch.Tensor) -> None:
    if isinstance(act, nn.PReLU) and act.weight.numel() > 1:
        with torch.no_grad():
            act.weight = nn.Parameter(act.weight.index_select(0, keep).clone())
        act.num_parameters = len(keep)


# ---------------------------------------------------------------------------- scoring

def l1_scores(chain: Chain) -> list[torch.Tensor]:
    return [c.weight.detach().abs().sum(dim=(1, 2, 3)) for c in chain.convs[:-1]]


def glca_scores(model: nn.Module, chain: Chain, batches: Callable[[int], tuple],
                loss_fn: Callable, steps: int = 150, sparsity: float = 0.02,
                lr: float = 1e-2, log=print) -> list[torch.Tensor]:
    """Fit GLCA gates on calibration batches with the network frozen; return
    the mean gate of every channel of every prunable layer."""
    mods = nn.ModuleList(GLCA(c.out_channels) for c in chain.convs[:-1])
    gates: dict[int, torch.Tensor] = {}
    hooks = []
    for i, act in enumerate(chain.acts):
        def hook(_m, _inp, out, i=i):
            a = mods[i](out)
            gates[i] = a
            return out * a[:, :, None, None]
        hooks.append(act.register_forward_hook(hook))
    for p in model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(mods.parameters(), lr=lr)
    sums = [torch.zeros(c.out_channels) for c in chain.convs[:-1]]
    count = 0
    model.train()
    try:
        for step in range(steps):
            batch = batches(step)
            loss = loss_fn(model, batch)
            pressure = sum(g.mean() for g in gates.values()) / len(gates)
            opt.zero_grad(set_to_none=True)
            (loss + sparsity * pressure).backward()
            opt.step()
            if step >= steps // 2:  # average the gates once they have settled
                for i, g in gates.items():
                    sums[i] += g.detach().mean(dim=0)
                count += 1
            if (step + 1) % 50 == 0:
                log(f"glca step {step + 1}/{steps} task loss {loss.item():.5f} mean gate {pressure.item():.3f}")
    finally:
        for h in hooks:
            h.remove()
        model.eval()
    return [s / max(1, count) for s in sums]


# ---------------------------------------------------------------------------- pruning

def keep_indices(scores: list[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    out = []
    for s in scores:
        n = max(1, int(round(len(s) * (1 - ratio))))
        out.append(torch.sort(torch.topk(s, n).indices).values)
    return out


@torch.no_grad()
def _activations(chain: Chain, x: torch.Tensor) -> list[torch.Tensor]:
    """Inputs of every conv of the chain: [x, act0(conv0 x), ...]."""
    ins = [x]
    for conv, act in zip(chain.convs[:-1], chain.acts):
        ins.append(act(conv(ins[-1])))
    return ins


@torch.no_grad()
def _ridge_refit(conv: nn.Conv2d, x_new: torch.Tensor, target: torch.Tensor, samples: int = 40000,
                 ridge: float = 1e-4) -> None:
    """Refit conv (weights and bias) so that conv(x_new) ~ target, by ridge
    least squares on sampled output positions."""
    k = conv.kernel_size[0]
    cols = F.unfold(x_new, k, padding=conv.padding[0])  # (B, Cin*k*k, H*W)
    b, d, n = cols.shape
    cols = cols.permute(0, 2, 1).reshape(-1, d)
    y = target.flatten(2).permute(0, 2, 1).reshape(-1, target.shape[1])
    if cols.shape[0] > samples:
        idx = torch.randperm(cols.shape[0], generator=torch.Generator().manual_seed(0))[:samples]
        cols, y = cols[idx], y[idx]
    a = torch.cat([cols, torch.ones(len(cols), 1)], dim=1).double()
    gram = a.T @ a
    gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    sol = torch.linalg.solve(gram, a.T @ y.double())  # (d + 1, Cout)
    conv.weight = nn.Parameter(sol[:-1].T.reshape(conv.out_channels, -1, k, k).float().contiguous())
    conv.bias = nn.Parameter(sol[-1].float().contiguous())


@torch.no_grad()
def prune_chain(chain: Chain, keeps: list[torch.Tensor], calib: torch.Tensor | None,
                compensate: bool = True) -> None:
    """Remove channels in place; with `compensate`, refit each next conv on
    calibration inputs `calib` (B, C, H, W) against the unpruned chain."""
    orig = copy.deepcopy(chain) if compensate else None
    targets = None
    if compensate:
        ins = _activations(orig, calib)
        targets = [conv(x) for conv, x in zip(orig.convs, ins)]  # pre-activations of the original
    cur = calib
    for i, keep in enumerate(keeps):
        conv, nxt, act = chain.convs[i], chain.convs[i + 1], chain.acts[i]
        _select(conv, keep, 0)
        _select_act(act, keep)
        _select(nxt, keep, 1)
        if compensate:
            cur = act(conv(cur))  # pruned activations entering the next conv
            _ridge_refit(nxt, cur, targets[i + 1])


def widths(chain: Chain) -> list[int]:
    return [c.out_channels for c in chain.convs[:-1]]


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.clamp(0, 1), b.clamp(0, 1)).item()
    return 10 * math.log10(1 / max(mse, 1e-12))


# ---------------------------------------------------------------------------- orchestration

CHAINS = {"ecbsr": ecbsr_chain}


def _speed(model: nn.Module, x: torch.Tensor, repeat: int = 3) -> float:
    """Best-of-`repeat` seconds for one forward pass (channels_last, as run)."""
    import time

    m = model.eval().to(memory_format=torch.channels_last)
    x = x.to(memory_format=torch.channels_last)
    best = float("inf")
    with torch.inference_mode():
        m(x)
        for _ in range(repeat):
            t = time.perf_counter()
            m(x)
            best = min(best, time.perf_counter() - t)
    return best


def prune_model(wf, ratio: float, data: list[str] | None, criterion: str = "glca",
                compensate: bool = True, steps: int = 0, out=None, seed: int = 0, log=print) -> dict:
    """Prune the model in weights file `wf`; write `out`; return a report
    with before/after parameters, MACs, speed and quality (the unpruned
    model, and the plain L1-norm baseline at the same ratio, measured in the
    same run)."""
    from . import registry, weights
    from .train.data import SRPairs, list_images, load_rgb
    from .train.loop import TrainOptions, TrainTask, train

    if wf.arch not in CHAINS:
        raise NotImplementedError(f"pruning {wf.arch!r} models is not supported yet "
                                  f"(supported: {', '.join(CHAINS)})")
    if not data and (criterion == "glca" or compensate or steps):
        raise ValueError("GLCA scoring, compensation and fine-tuning need calibration images: --data DIR")
    scale = wf.scale
    torch.manual_seed(seed)
    base = registry.build_from_weights(wf).eval()
    CHAINS[wf.arch](base)
    calib = held = pairs = None
    if data:
        images = load_rgb(list_images(data), min_side=48 * scale)
        pairs = SRPairs(images, scale, 48, seed=seed)
        calib = pairs.batch(32)[0]
        held = SRPairs(images, scale, 48, seed=seed + 1).batch(32)  # held-out crops for quality

    def loss_fn(net, b):
        return F.l1_loss(net(b[0]), b[1])

    def quality(net) -> float | None:
        if held is None:
            return None
        net.eval()
        with torch.no_grad():
            return round(psnr_db(net(held[0]), held[1]), 4)

    def prune_copy(crit: str, comp: bool):
        net = copy.deepcopy(base)
        chain = CHAINS[wf.arch](net)
        if crit == "l1":
            scores = l1_scores(chain)
        else:
            scores = glca_scores(net, chain, lambda s: pairs.batch(16), loss_fn, log=log)
        prune_chain(chain, keep_indices(scores, ratio), calib, compensate=comp)
        for p in net.parameters():
            p.requires_grad_(True)
        net.cfg.widths = widths(chain)
        return net.eval()

    x = torch.rand(1, wf.config.get("colors", 3), 256, 256)
    report = {"ratio": ratio, "criterion": criterion, "compensate": compensate, "steps": steps,
              "rows": []}

    def row(name, net):
        report["rows"].append({
            "model": name, "params": registry.count_params(net),
            "gmacs_per_output_mp": round(registry.macs_per_output_mp(net, scale) / 1e9, 4),
            "seconds_256": round(_speed(net, x), 4), "psnr_calib": quality(net)})

    row("unpruned", base)
    if not (criterion == "l1" and not compensate):
        row("l1, plain removal (baseline)", prune_copy("l1", False))
    pruned = prune_copy(criterion, compensate)
    row(f"{criterion}{' + compensation' if compensate else ''}", pruned)
    if steps:
        cfg = pruned.config()

        def sample(step):
            if step % 500 == 0:
                pairs.rng.seed(seed * 1_000_003 + step)
            return pairs.batch(16)

        task = TrainTask(arch=wf.arch, task=wf.task, scale=scale, model=pruned, config=cfg,
                         batch=sample, loss=loss_fn)
        tmp = out.with_name(out.name + ".finetune") if out else None
        train(task, TrainOptions(steps=steps, out=tmp, lr=2e-4, warmup=0, save_every=10**9,
                                 log=log, resume=False))
        for p in (tmp, tmp.with_name(tmp.name + ".state")):
            p.unlink(missing_ok=True)
        pruned.eval()
        row(f"{criterion}{' + compensation' if compensate else ''} + {steps} fine-tuning steps", pruned)
    if out is not None:
        prov = dict(wf.provenance)
        prov.pop("metrics", None)  # measured on the unpruned model
        prov["pruned"] = {"from": str(wf.path.name), "ratio": ratio, "criterion": criterion,
                          "compensate": compensate, "finetune_steps": steps,
                          "data": [str(d) for d in (data or [])], "report": report["rows"]}
        weights.save(out, pruned.state_dict(), arch=wf.arch, config=pruned.config(), task=wf.task,
                     scale=scale, provenance=prov)
    report["widths"] = pruned.cfg.widths
    return report
