"""Channel pruning: global-local channel attention (GLCA) scoring and
least-squares weight compensation (seed: the lightweight colorization work's
pruning algorithm), for every architecture we ship.

A model is described to the pruner as channel *groups*: sets of channels
that must be removed together because several layers share them. A group
lists the layers whose output channels it is (`outs`), the layers that read
it, with the offset where it sits in their input (`ins`: a concatenation
reads two groups at two offsets), depthwise convolutions and per-channel
activations that live on it, and `gates`: the layers whose outputs write it.

Each architecture declares its groups next to its layers
(`ArchSpec.channel_groups` in its family file), with the channel multiple
its wide groups keep; the pruner never reaches into a model's layers, and
what it calibrates and times on is the model's task's (`tasks.Task`).

1. Score. A GLCA module per group computes two descriptors of each channel at
   the group's first writer: a local one (a depthwise 3x3 conv, pooled) and a
   global one, the same small kernel applied after a shuffle-reorder that
   interleaves the blocks of a g x g grid, so that pixels H/g apart become
   neighbours and a 3x3 kernel sees long-range context. A small fully
   connected layer turns both into a per-channel gate in (0, 1) that
   multiplies every write to the group (positively homogeneous activations
   make that the same as scaling the whole channel). With the network frozen,
   the gates are fitted briefly on calibration batches of the model's own
   task under the task loss plus an L1 pressure towards closing; a channel's
   importance is its mean gate. Then the modules are removed.
   (`criterion="l1"`: importance is the L1 norm of the weights that write the
   channel, the classic baseline.)
2. Remove the lowest-importance channels of every group so that the
   parameter count falls by at least `ratio` (`plan_widths`: the same
   fraction everywhere, then the budget the rounding left is filled); wide
   groups keep a multiple of 8 channels (16 for ECBSR: `ChannelGroups.round_to`),
   which the CPU kernels vectorize: an odd width saves parameters but
   little time.
3. Compensate. In execution order, every dense layer that reads a pruned
   group is refitted by ridge regression so that, fed with the *pruned*
   network's activations, it reproduces the *unpruned* network's outputs on
   the calibration data: the kept channels absorb what the removed ones
   contributed, and the error of earlier layers is corrected as it goes.
4. Optionally fine-tune (`steps`), distilling the unpruned model: the
   pruned one learns to reproduce its outputs on the calibration images.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .bench import best_of, count_macs
from .models.arch import ChannelGroups
from .models.reparam import reparameterize
from .registry import count_params, own_state


class GLCA(nn.Module):
    """Global-local channel attention for a (B, C, H, W) map (or a (B, C)
    vector) -> gates (B, C)."""

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
        if x.dim() == 2:  # a feature vector: no spatial context to look at
            local = glob = x.abs()
        else:
            local = self.local(x).abs().mean(dim=(2, 3))
            glob = self.glob(self.shuffle(x) if min(x.shape[2:]) >= self.grid else x).abs().mean(dim=(2, 3))
        return torch.sigmoid(self.fc(torch.cat([local, glob], dim=1)))  # (B, C)


# ---------------------------------------------------------------------------- scoring

def l1_scores(spec: ChannelGroups) -> list[torch.Tensor]:
    """The L1 norm of every weight that writes each channel."""
    out = []
    for g in spec.groups:
        s = torch.zeros(g.size)
        for mod in g.outs:
            s += mod.weight.detach().abs().reshape(g.size, -1).sum(1)
        out.append(s)
    return out


def glca_scores(model: nn.Module, spec: ChannelGroups, batches: Callable[[int], tuple],
                loss_fn: Callable, steps: int = 150, sparsity: float = 2.0,
                lr: float = 1e-2, log=print) -> list[torch.Tensor]:
    """Fit GLCA gates on calibration batches with the network frozen; return
    the mean gate of every channel of every group. The task loss is divided
    by its value with open gates, so `sparsity` means the same for every
    task (an L1 loss of 0.03 and an a*b* MSE of 200 would otherwise weigh
    the pressure 100-fold differently)."""
    mods = nn.ModuleList(GLCA(g.size) for g in spec.groups)
    gates: dict[int, torch.Tensor] = {}
    hooks = []
    for i, g in enumerate(spec.groups):
        for j, mod in enumerate(g.gates):
            def hook(_m, _inp, out, i=i, first=(j == 0)):
                if first:
                    gates[i] = mods[i](out)
                a = gates[i]
                return out * (a[:, :, None, None] if out.dim() == 4 else a)
            hooks.append(mod.register_forward_hook(hook))
    for p in model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(mods.parameters(), lr=lr)
    sums = [torch.zeros(g.size) for g in spec.groups]
    count = 0
    model.train()
    scale = None
    try:
        for step in range(steps):
            gates.clear()
            loss = loss_fn(model, batches(step))
            if scale is None:
                scale = max(loss.item(), 1e-12)
            loss = loss / scale
            pressure = sum(g.mean() for g in gates.values()) / len(gates)
            opt.zero_grad(set_to_none=True)
            (loss + sparsity * pressure).backward()
            opt.step()
            if step >= steps // 2:  # average the gates once they have settled
                for i, g in gates.items():
                    sums[i] += g.detach().mean(dim=0)
                count += 1
            if (step + 1) % 50 == 0:
                log(f"glca step {step + 1}/{steps} task loss {loss.item() * scale:.5f} mean gate {pressure.item():.3f}")
    finally:
        for h in hooks:
            h.remove()
        model.eval()
    return [s / max(1, count) for s in sums]


# ---------------------------------------------------------------------------- pruning

def width_step(size: int, round_to: int) -> int:
    """The multiple a group of `size` channels keeps: `round_to`, halved
    until the group holds at least two of it (a 24-channel group keeps
    multiples of 8 under a multiple of 16); under 8, none (1). CPU kernels
    vectorize by 8 channels, and an odd width costs speed for little gain
    (weights/MODEL_CARD.md, "Pruning"). The architecture's ChannelGroups say
    which multiple (8, or 16 for ECBSR's dense 3x3 convolutions)."""
    while round_to > 1 and size < 2 * round_to:
        round_to //= 2
    return round_to if round_to >= 8 else 1


def kept_count(size: int, keep_fraction: float, round_to: int) -> int:
    """Channels kept of a group of `size`: a multiple of its width_step."""
    n = max(1, int(round(size * keep_fraction)))
    step = width_step(size, round_to)
    if step > 1:
        n = max(step, n // step * step)
    return n


def keep_indices(scores: list[torch.Tensor], counts: list[int]) -> list[torch.Tensor]:
    """The `counts[i]` highest-scoring channels of every group, in order."""
    return [torch.sort(torch.topk(s, n).indices).values for s, n in zip(scores, counts)]


def _in_width(mod: nn.Module) -> int:
    return mod.in_features if isinstance(mod, nn.Linear) else mod.in_channels


def _in_keep(mod: nn.Module, segments: list[tuple[int, int, torch.Tensor]]) -> torch.Tensor:
    """Input channels kept by `mod` given (offset, size, keep) of the groups it reads."""
    mask = torch.ones(_in_width(mod), dtype=torch.bool)
    for off, size, keep in segments:
        mask[off:off + size] = False
        mask[off + keep] = True
    return mask.nonzero().flatten()


@torch.no_grad()
def apply_keep(spec: ChannelGroups, keeps: list[torch.Tensor]) -> tuple[dict, dict]:
    """Remove channels in place; returns the kept output and input channels of
    every shrunk dense layer (for the refit)."""
    out_keep: dict[nn.Module, torch.Tensor] = {}
    in_segs: dict[nn.Module, list] = {}
    for g, keep in zip(spec.groups, keeps):
        for mod in g.outs:
            out_keep[mod] = keep
        for mod, off in g.ins:
            in_segs.setdefault(mod, []).append((off, g.size, keep))
        for dw in g.dws:
            dw.weight = nn.Parameter(dw.weight[keep].clone())
            if dw.bias is not None:
                dw.bias = nn.Parameter(dw.bias[keep].clone())
            dw.in_channels = dw.out_channels = dw.groups = len(keep)
        for act in g.acts:
            if isinstance(act, nn.PReLU) and act.weight.numel() > 1:
                act.weight = nn.Parameter(act.weight[keep].clone())
                act.num_parameters = len(keep)
    in_keep = {mod: _in_keep(mod, segs) for mod, segs in in_segs.items()}
    for mod in set(out_keep) | set(in_segs):
        w = mod.weight
        if mod in out_keep:
            w = w[out_keep[mod]]
            if mod.bias is not None:
                mod.bias = nn.Parameter(mod.bias[out_keep[mod]].clone())
        if mod in in_keep:
            w = w[:, in_keep[mod]]
        mod.weight = nn.Parameter(w.clone())
        if isinstance(mod, nn.Linear):
            mod.out_features, mod.in_features = w.shape
        else:
            mod.out_channels, mod.in_channels = w.shape[:2]
    for g, keep in zip(spec.groups, keeps):
        g.size = len(keep)
    spec.set_widths({g.name: g.size for g in spec.groups})
    return out_keep, in_keep


def _run_with_hooks(model: nn.Module, mods, hook: Callable, x, run: Callable) -> None:
    hooks = [m.register_forward_hook(hook) for m in mods]
    try:
        with torch.no_grad():
            run(model, x)
    finally:
        for h in hooks:
            h.remove()


def _capture(model: nn.Module, mods: list[nn.Module], x, run: Callable, want: str) -> dict:
    """Inputs (`want="in"`) or outputs of `mods` over one run, every call."""
    got: dict[nn.Module, list] = {m: [] for m in mods}

    def hook(mod, inp, out):  # a copy: an in-place activation after the layer would overwrite it
        got[mod].append((inp[0] if want == "in" else out).detach().clone())
    _run_with_hooks(model, mods, hook, x, run)
    return got


def _rows(mod: nn.Module, xs: list[torch.Tensor]) -> torch.Tensor:
    """Layer inputs -> (N, D) rows whose product with the weight is the output."""
    if isinstance(mod, nn.Linear):
        return torch.cat([x.reshape(-1, x.shape[-1]) for x in xs])
    k = mod.kernel_size
    rows = []
    for x in xs:
        cols = F.unfold(x, k, dilation=mod.dilation, padding=mod.padding, stride=mod.stride)
        rows.append(cols.permute(0, 2, 1).reshape(-1, cols.shape[1]))
    return torch.cat(rows)


def _targets(mod: nn.Module, ys: list[torch.Tensor]) -> torch.Tensor:
    if isinstance(mod, nn.Linear):
        return torch.cat([y.reshape(-1, y.shape[-1]) for y in ys])
    return torch.cat([y.flatten(2).permute(0, 2, 1).reshape(-1, y.shape[1]) for y in ys])


@torch.no_grad()
def _ridge_refit(mod: nn.Module, rows: torch.Tensor, y: torch.Tensor, fixed: torch.Tensor | None = None,
                 samples: int = 40000, ridge: float = 1e-4) -> bool:
    """Refit a conv or linear layer (weights and bias) so that rows @ W.T + b
    ~ y, by ridge least squares; skipped (False) with too few samples.
    Columns in `fixed` (a boolean mask over the rows' columns) keep their
    weights; the others absorb the difference."""
    w_old = mod.weight.detach().reshape(mod.weight.shape[0], -1)  # (Cout, D)
    free = torch.ones(rows.shape[1], dtype=torch.bool) if fixed is None else ~fixed
    if fixed is not None and fixed.any():
        y = y - rows[:, fixed] @ w_old[:, fixed].T
    rows = rows[:, free]
    d = rows.shape[1] + 1
    if rows.shape[0] < 4 * d:
        return False
    if rows.shape[0] > samples:
        idx = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(0))[:samples]
        rows, y = rows[idx], y[idx]
    a = torch.cat([rows, torch.ones(len(rows), 1)], dim=1).double()
    gram = a.T @ a
    gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    sol = torch.linalg.solve(gram, a.T @ y.double())  # (d, Cout)
    w = w_old.clone()
    w[:, free] = sol[:-1].T.float()
    mod.weight = nn.Parameter(w.reshape(mod.weight.shape).contiguous())
    if mod.bias is not None:
        mod.bias = nn.Parameter(sol[-1].float().contiguous())
    return True


def _fixed_columns(mod: nn.Module, segments: list[tuple[int, int]]) -> torch.Tensor | None:
    """Row columns of `mod` fed by broadcast groups ((offset, size) after pruning)."""
    if not segments:
        return None
    per_channel = 1 if isinstance(mod, nn.Linear) else mod.kernel_size[0] * mod.kernel_size[1]
    mask = torch.zeros(_in_width(mod), dtype=torch.bool)
    for off, size in segments:
        mask[off:off + size] = True
    return mask.repeat_interleave(per_channel)  # unfold orders columns channel-major


def execution_order(model: nn.Module, x, run: Callable) -> list[nn.Module]:
    order: list[nn.Module] = []
    dense = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    _run_with_hooks(model, dense, lambda mod, i, o: order.append(mod) if mod not in order else None, x, run)
    return order


def prune(model: nn.Module, spec: ChannelGroups, keeps: list[torch.Tensor], calib=None,
          run: Callable = lambda m, x: m(x), compensate: bool = True) -> None:
    """Remove the channels not in `keeps` in place; with `compensate`, refit
    every dense layer that reads a pruned group on calibration input
    `calib` against the unpruned model (`run(model, calib)` runs it)."""
    if not compensate:
        apply_keep(spec, keeps)
        return
    orig = copy.deepcopy(model).eval()
    names = {m: n for n, m in model.named_modules()}
    readers = {mod for g in spec.groups for mod, _ in g.ins}
    order = [m for m in execution_order(model, calib, run) if m in readers]
    orig_mods = dict(orig.named_modules())
    targets = _capture(orig, [orig_mods[names[m]] for m in order], calib, run, "out")
    out_keep, in_keep = apply_keep(spec, keeps)
    # where broadcast groups sit in each reader's input after pruning
    fixed: dict[nn.Module, list[tuple[int, int]]] = {}
    for g, keep in zip(spec.groups, keeps):
        if g.broadcast:
            for mod, off in g.ins:
                new_off = int((in_keep[mod] < off).sum()) if mod in in_keep else off
                fixed.setdefault(mod, []).append((new_off, len(keep)))
    model.eval()
    for mod in order:
        ys = targets[orig_mods[names[mod]]]
        if mod in out_keep:
            ys = [y[:, out_keep[mod]] for y in ys]
        xs = _capture(model, [mod], calib, run, "in")[mod]
        _ridge_refit(mod, _rows(mod, xs), _targets(mod, ys), _fixed_columns(mod, fixed.get(mod, [])))


def _cost_with(model: nn.Module, spec_fn: Callable, counts: list[int], x: torch.Tensor) -> tuple[int, int]:
    """(parameters, MACs on `x`) of `model` cut to `counts` channels per group."""
    m = copy.deepcopy(model)
    spec = spec_fn(m)
    apply_keep(spec, [torch.arange(n) for n in counts])
    return count_params(m), count_macs(m, x)


# a channel may be given back when its compute per parameter is at most this
# multiple of the whole model's (ECBSR's layers all sit near the average:
# biases and activations have parameters and no MACs)
FILL_MACS_PER_PARAM = 1.1


def plan_widths(model: nn.Module, spec_fn: Callable, ratio: float, x: torch.Tensor,
                round_to: int | None = None) -> list[int]:
    """Channels to keep in every group so that the parameter count falls by
    at least `ratio`, and by not much more.

    First the largest common fraction of every group (bisection), rounded
    down to multiples of `round_to` (None: the architecture's; see
    width_step). The rounding can remove far more than asked (x4 at ratio
    0.5: 32 -> 16 channels everywhere, 68 % of the parameters), so the
    budget left is filled one step at a time (x4: 32/16/32/16/16, 53 %), in
    the group that keeps the smallest fraction of its channels (the fewest
    MACs among equals), among the steps that still fit and cost no more
    compute per parameter than the model does on average (`x` is the input
    MACs are counted on): the colorizer then gets its global path back
    (pooled, cheap) and not its half-resolution stream, so the speed-up
    stays what the parameter cut promises. Steps of half a layer still
    overshoot small ratios (x4 at 0.3 removes 40 %). Where even the
    narrowest widths at this multiple keep too many parameters, the
    multiple is halved until the ratio is reached."""
    spec = spec_fn(copy.deepcopy(model))
    sizes = [g.size for g in spec.groups]
    round_to = round_to or spec.round_to
    params0, macs0 = count_params(model), count_macs(model, x)
    budget = (1 - ratio) * params0
    if round_to > 1 and _cost_with(model, spec_fn, [kept_count(n, 0.0, round_to) for n in sizes], x)[0] > budget:
        return plan_widths(model, spec_fn, ratio, x, round_to // 2)
    lo, hi = 0.0, 1.0
    for _ in range(14):
        mid = (lo + hi) / 2
        counts = [kept_count(n, mid, round_to) for n in sizes]
        lo, hi = (lo, mid) if _cost_with(model, spec_fn, counts, x)[0] > budget else (mid, hi)
    counts = [kept_count(n, lo, round_to) for n in sizes]
    steps = [width_step(n, round_to) for n in sizes]
    open_ = {i for i, n in enumerate(sizes) if counts[i] + steps[i] <= n}
    # greedy: a group once out of the running (over the budget, or too dear
    # in compute next to its neighbours' widths then) is not asked again
    p, m = _cost_with(model, spec_fn, counts, x)  # the current widths' cost
    while open_:
        trials = {i: _cost_with(model, spec_fn, counts[:i] + [counts[i] + steps[i]] + counts[i + 1:], x)
                  for i in open_}
        open_ = {i for i in open_ if trials[i][0] <= budget
                 and trials[i][1] - m <= FILL_MACS_PER_PARAM * macs0 / params0 * (trials[i][0] - p)}
        if not open_:
            break
        i = min(open_, key=lambda i: (counts[i] / sizes[i], trials[i][1]))
        counts[i] += steps[i]
        p, m = trials[i]
        if counts[i] + steps[i] > sizes[i]:
            open_.discard(i)
    return counts


def _speeds(models: list[nn.Module], x: torch.Tensor, rounds: int = 7) -> list[float]:
    """Best-of-`rounds` seconds for one forward pass of each model
    (channels_last, as run), timed in turn (bench.best_of)."""
    nets = [m.eval().to(memory_format=torch.channels_last) for m in models]
    x = x.to(memory_format=torch.channels_last)

    def forward(m):
        with torch.inference_mode():
            m(x)

    return best_of([lambda m=m: forward(m) for m in nets], repeat=rounds)


# ---------------------------------------------------------------------------- orchestration

def prune_model(wf, ratio: float, data: list[str] | None, criterion: str = "glca",
                compensate: bool = True, steps: int = 0, out=None, seed: int = 0, round_to: int | None = None,
                log=print) -> dict:
    """Prune the model in weights file `wf` so that its parameter count falls
    by `ratio`; write `out`; return a report with before/after parameters,
    MACs, speed and quality (the unpruned model, and the plain L1-norm
    baseline at the same ratio, measured in the same run)."""
    from . import registry, tasks, weights
    from .train.loop import TrainOptions, TrainTask, train

    task = tasks.get(wf.task, wf.path)
    arch = registry.ARCHS.get(wf.arch)
    spec_fn = arch.channel_groups if arch else None
    if spec_fn is None:
        prunable = [a.id for a in registry.ARCHS.values() if a.channel_groups]
        why = f": {arch.not_prunable}" if arch and arch.not_prunable else ""
        raise NotImplementedError(f"pruning {wf.arch!r} models is not supported{why} "
                                  f"(supported: {', '.join(prunable)})")
    if not data and (criterion == "glca" or compensate or steps):
        raise ValueError("GLCA scoring, compensation and fine-tuning need calibration images: --data DIR")
    torch.manual_seed(seed)
    # the folded form is what is pruned and what runs
    base = reparameterize(registry.build_from_weights(wf)).eval()
    pd = task.calibration(data, wf.scale, seed) if data else None
    x = task.timing_input()  # MACs are counted on it too
    spec0 = spec_fn(copy.deepcopy(base))
    round_to = round_to or spec0.round_to
    counts = plan_widths(base, spec_fn, ratio, x, round_to)
    kept = sum(counts) / sum(g.size for g in spec0.groups)  # fraction of all channels kept

    def prune_copy(crit: str, comp: bool):
        net = copy.deepcopy(base)
        spec = spec_fn(net)
        if crit == "l1":
            scores = l1_scores(spec)
        else:
            scores = glca_scores(net, spec, pd.batches, pd.loss, log=log)
        prune(net, spec, keep_indices(scores, counts), pd.calib if pd else None, compensate=comp)
        for p in net.parameters():
            p.requires_grad_(True)
        return net.eval()

    report = {"ratio": ratio, "channels_kept": round(kept, 4), "round_to": round_to, "criterion": criterion,
              "compensate": compensate, "steps": steps, "rows": []}

    if pd:
        with torch.no_grad():
            ref = (pd.held[0], base(pd.held[0]))  # the unpruned model's outputs on the held-out crops

    timed: list[nn.Module] = []

    def row(name, net):
        macs = count_macs(net, x)
        net.eval()
        timed.append(copy.deepcopy(net))
        report["rows"].append({
            "model": name, "params": count_params(net), "gmacs_256": round(macs / 1e9, 4),
            "psnr_calib": round(pd.quality(net, pd.held), 4) if pd else None,
            "psnr_vs_unpruned": round(pd.quality(net, ref), 4) if pd and net is not base else None})

    row("unpruned", base)
    if not (criterion == "l1" and not compensate):
        row("l1, plain removal (baseline)", prune_copy("l1", False))
    pruned = prune_copy(criterion, compensate)
    name = f"{criterion}{' + compensation' if compensate else ''}"
    row(name, pruned)
    if steps:
        teacher = base.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        tune = TrainTask(arch=wf.arch, task=task.name, scale=wf.scale, model=pruned, config=pruned.config(),
                         batch=pd.tune_batches, loss=lambda net, b: pd.tune_loss(net, teacher, b))
        tmp = out.with_name(out.name + ".finetune") if out else None
        try:
            def tune_log(msg: str) -> None:
                if not msg.startswith(f"wrote {tmp}"):  # a temporary file: not the user's business
                    log(msg)

            train(tune, TrainOptions(steps=steps, out=tmp, lr=pd.tune_lr, warmup=0, save_every=10**9,
                                     log=tune_log, resume=False))
        finally:
            for p in (tmp, tmp.with_name(tmp.name + ".state")) if tmp else ():
                p.unlink(missing_ok=True)
        pruned.eval()
        row(f"{name} + {steps} fine-tuning steps", pruned)
    for r, sec in zip(report["rows"], _speeds(timed, x)):
        r["seconds_256"] = round(sec, 4)
    if out is not None:
        prov = dict(wf.provenance)
        prov.pop("metrics", None)  # measured on the unpruned model
        prov["pruned"] = {"from": str(wf.path.name), "ratio": ratio, "channels_kept": round(kept, 4),
                          "round_to": round_to,
                          "criterion": criterion, "compensate": compensate, "finetune_steps": steps,
                          "finetune": pd.tune_note if steps else None,
                          "data": [str(d) for d in (data or [])], "report": report["rows"]}
        weights.save(out, own_state(pruned), arch=wf.arch, config=pruned.config(), task=wf.task,
                     scale=wf.scale, provenance=prov)
    report["widths"] = pruned.config().get("widths")
    return report
