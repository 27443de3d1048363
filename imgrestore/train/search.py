"""The JSNet search: which operation each layer runs, which attention each
cell applies and where it connects, chosen by a differentiable search.

The supernet has every candidate at once: a layer's output is the softmax
(over its architecture parameters alpha) weighted sum of every operation
(`MixedOp`), a cell's attention the gamma-weighted sum of every attention
(`MixedAttention`), and its connection the beta-weighted sum of the two
wirings. Weights and architecture parameters are updated in turn (first-order
DARTS): a weight step on one half of the training photos, an architecture
step on the other half, after a warm-up of weight steps alone. The derived
genotype takes the strongest choice everywhere, keeping at most `max_skips`
winning skips per module (P-DARTS: the search drifts to parameter-free
operations while the weights are young); it is data (`JSNet`'s config).

`run_search` then trains the derived network and the hand-picked cell of the
same size (width matched to the parameter count) the same way, from the same
batches, and scores both on the hold-out: what the search gained.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from .. import weights
from ..models.restore import (ATTENTIONS, CONNECTS, OPS, FeatureNet, JSNet, JSNetConfig, describe, hand_picked,
                              make_attention, make_op)
from ..tasks import get
from ..tasks.base import checkpoint_sampler
from ..tasks.restore import l1_loss
from .loop import TrainOptions, TrainTask, train
from .restore import HOLDOUT, evaluator, training_data

OP_NAMES, ATT_NAMES = list(OPS), list(ATTENTIONS)


class SearchCell(nn.Module):
    """A joint search module with every choice at once, weighted by its own
    architecture parameters: alpha (layers, ops), gamma (attentions), beta
    (connections)."""

    def __init__(self, c: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleList(make_op(o, c) for o in OP_NAMES) for _ in range(layers))
        self.atts = nn.ModuleList(make_attention(a, c) for a in ATT_NAMES)
        self.alpha = nn.Parameter(1e-3 * torch.randn(layers, len(OP_NAMES)))
        self.gamma = nn.Parameter(1e-3 * torch.randn(len(ATT_NAMES)))
        self.beta = nn.Parameter(1e-3 * torch.randn(len(CONNECTS)))

    def attend(self, z, g):
        return sum(w * a(z) for w, a in zip(g, self.atts))

    def forward(self, x):
        b = x
        for ops, w in zip(self.layers, self.alpha.softmax(-1)):
            b = sum(wi * op(b) for wi, op in zip(w, ops))  # MixedOp
        g, c = self.gamma.softmax(-1), self.beta.softmax(-1)
        return c[0] * (x + self.attend(b, g)) + c[1] * self.attend(x + b, g)

    def genotype(self, max_skips: int | None = None) -> dict:
        """The strongest choice everywhere; with `max_skips`, at most that
        many layers keep a winning skip (those where it won by most), the
        others take their strongest operation with parameters (P-DARTS'
        cure for the search's drift to parameter-free operations)."""
        w = self.alpha.detach().softmax(-1)
        ops = [OP_NAMES[int(i)] for i in w.argmax(-1)]
        if max_skips is not None:
            skip, params = OP_NAMES.index("skip"), [i for i, o in enumerate(OP_NAMES) if o != "skip"]
            won = sorted((i for i, o in enumerate(ops) if o == "skip"), key=lambda i: -float(w[i, skip]))
            for i in won[max_skips:]:
                ops[i] = OP_NAMES[params[int(w[i, params].argmax())]]
        return {"ops": ops, "attention": ATT_NAMES[int(self.gamma.argmax())],
                "connect": CONNECTS[int(self.beta.argmax())]}

    def weights(self) -> dict:
        """The softmax of each choice, for the report."""
        r = lambda t: [round(float(v), 3) for v in t.detach()]  # noqa: E731
        return {"ops": [dict(zip(OP_NAMES, r(w))) for w in self.alpha.softmax(-1)],
                "attention": dict(zip(ATT_NAMES, r(self.gamma.softmax(-1)))),
                "connect": dict(zip(CONNECTS, r(self.beta.softmax(-1))))}


class SuperNet(FeatureNet):
    def __init__(self, channels: int, cells: int, layers: int, colors: int = 3):
        super().__init__(colors, channels, [SearchCell(channels, layers) for _ in range(cells)], fuse=True)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n.rsplit(".", 1)[-1] in ("alpha", "gamma", "beta")]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def genotype(self, max_skips: int | None = None) -> list[dict]:
        return [c.genotype(max_skips) for c in self.cells]


def count(config: dict) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in JSNet(**config).parameters())


def matched_width(cells: list[dict], target: int, task: str) -> int:
    """The width (a multiple of 4) at which `cells` has about `target` parameters."""
    return min(range(4, 257, 4), key=lambda c: abs(count(dict(task=task, channels=c, cells=cells)) - target))


def search(task_name: str, images: list, *, channels: int, cells: int, layers: int, steps: int, patch: int,
           batch: int, lr: float, arch_lr: float, warmup: float, seed: int, max_skips: int | None = 1,
           log=print) -> tuple[list[dict], dict]:
    """The differentiable search on `images` -> (genotype, report)."""
    torch.manual_seed(seed)
    task = get(task_name)
    net = SuperNet(channels, cells, layers)
    # DARTS' two halves of the training data: weights learn on one, the architecture on the other
    if len(images) < 2:
        raise ValueError(f"the search needs at least 2 training photos, got {len(images)}")
    w_batches = checkpoint_sampler(task.pairs(images[0::2], patch, seed=seed), batch, seed)
    a_batches = checkpoint_sampler(task.pairs(images[1::2], patch, seed=seed + 1), batch, seed + 1)
    w_opt = torch.optim.Adam(net.weight_parameters(), lr=lr, betas=(0.9, 0.99))
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=arch_lr, betas=(0.5, 0.999), weight_decay=1e-3)
    start = int(warmup * steps)
    t0, running, history = time.time(), 0.0, []
    net.train()
    for step in range(steps):
        net.zero_grad(set_to_none=True)
        loss = l1_loss(net, w_batches(step))
        loss.backward()
        w_opt.step()
        running += loss.item()
        if step >= start:
            net.zero_grad(set_to_none=True)
            l1_loss(net, a_batches(step)).backward()
            a_opt.step()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            g = net.genotype()
            history.append({"step": step + 1, "genotype": describe(g)})
            log(f"search step {step + 1}/{steps} loss {running / ((step % 50) + 1):.5f} "
                f"{(time.time() - t0) / (step + 1):.2f}s/step  {describe(g)}")
            running = 0.0
    genotype = net.genotype(max_skips)
    report = dict(steps=steps, warmup_steps=start, max_skips_per_cell=max_skips,
                  strongest=describe(net.genotype()), channels=channels, cells=cells, layers=layers, patch=patch,
                  batch=batch, lr=lr, arch_lr=arch_lr, minutes=round((time.time() - t0) / 60, 1),
                  genotype=describe(genotype), weights=[c.weights() for c in net.cells],
                  history=history[-6:])
    return genotype, report


def run_search(task_name: str, data: list[str], out: Path, *, channels: int = 32, cells: int = 4, layers: int = 2,
               steps: int = 600, patch: int = 48, batch: int = 8, lr: float = 2e-3, arch_lr: float = 3e-3,
               warmup: float = 0.5, max_skips: int | None = 1, compare_steps: int = 400, compare_batch: int = 16, compare_patch: int = 64,
               holdout: float = HOLDOUT, seed: int = 0, log=print) -> dict:
    """Search, then train the derived network and the same-size hand-picked
    one `compare_steps` each, the same way; writes the derived network to
    `out` (its genotype in the config, the whole report in the provenance)
    and the hand-picked one beside it (`*.handpicked.safetensors`)."""
    task = get(task_name)
    images, held = training_data(data, holdout, max(patch, compare_patch), log)
    genotype, report = search(task_name, images, channels=channels, cells=cells, layers=layers, steps=steps,
                              patch=patch, batch=batch, lr=lr, arch_lr=arch_lr, warmup=warmup, seed=seed,
                              max_skips=max_skips, log=log)
    log(f"derived: {describe(genotype)}")
    derived = dict(JSNetConfig(task=task_name, channels=channels, cells=genotype).__dict__)
    reference_cells = hand_picked(cells, layers)
    reference = dict(JSNetConfig(task=task_name, channels=matched_width(reference_cells, count(derived), task_name),
                                 cells=reference_cells).__dict__)
    evaluate = evaluator(task_name, held, None)
    results = {}
    for name, config, path in (("searched", derived, out),
                               ("hand-picked", reference, out.with_name(out.stem + ".handpicked.safetensors"))):
        torch.manual_seed(seed)
        model = JSNet(**config)
        sample = checkpoint_sampler(task.pairs(images, compare_patch, seed=seed), compare_batch, seed)
        tt = TrainTask(arch="jsnet", task=task_name, scale=1, model=model, config=config, batch=sample,
                       loss=l1_loss, evaluate=evaluate,
                       provenance=dict(data=[Path(x).name for x in data], images=len(images),
                                       architecture=describe(config["cells"]), role=name))
        metrics = train(tt, TrainOptions(steps=compare_steps, out=path, lr=lr, warmup=min(200, compare_steps // 5),
                                         eval_every=10 ** 9, log=log, resume=False))
        results[name] = dict(architecture=describe(config["cells"]), channels=config["channels"],
                             params=count(config), holdout=metrics.get("holdout"), file=path.name)
        log(f"{name}: {json.dumps(results[name])}")
    s, h = (results[k]["holdout"] for k in ("searched", "hand-picked"))
    if s and h:
        report["gain_over_hand_picked_db"] = {k: round(s["by_setting"][k]["psnr"] - h["by_setting"][k]["psnr"], 4)
                                              for k in s["by_setting"]}
    report["compare"] = dict(steps=compare_steps, batch=compare_batch, patch=compare_patch, **results)
    wf = weights.read(out)
    weights.save(out, wf.tensors, arch="jsnet", config=derived, task=task_name,
                 scale=1, provenance=dict(wf.provenance, search=report))
    log(f"search report: {json.dumps(report.get('gain_over_hand_picked_db'))}")
    return report
