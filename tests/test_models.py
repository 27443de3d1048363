"""Architecture behaviour: folding is exact, gradients flow, save/reload."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_CELLS, randomize
from imgrestore import registry, weights
from imgrestore.models.blocks import ECB
from imgrestore.models.sr import ECBSR


@pytest.mark.parametrize("cin,cout,identity", [(3, 8, False), (8, 8, True), (8, 12, False)])
def test_ecb_fold_equals_branches(cin, cout, identity):
    block = randomize(ECB(cin, cout, 2.0, identity), std=0.2)
    x = torch.rand(2, cin, 13, 9)
    with torch.no_grad():
        branched = block.forward_branched(x)
        online = block(x)
        block.reparameterize()
        folded = block(x)
        block.reparameterize()  # idempotent
        again = block(x)
    assert (branched - online).abs().max() < 1e-4
    assert (branched - folded).abs().max() < 1e-4
    assert torch.equal(folded, again)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_ecbsr_fold_equals_branches(scale):
    model = randomize(ECBSR(scale=scale, channels=8, blocks=2), std=0.1).eval()
    x = torch.rand(1, 3, 17, 11)
    with torch.no_grad():
        branched = model.forward_branched(x)
        model.reparameterize()
        folded = model(x)
    assert folded.shape == (1, 3, 17 * scale, 11 * scale)
    assert (branched - folded).abs().max() < 1e-4
    assert model.cfg.deploy and all(isinstance(m, torch.nn.Conv2d) for m in model.layers)


def test_output_clipped_and_residual_base():
    # with every learned weight zero, the network is nearest-neighbour upsampling
    model = ECBSR(scale=2, channels=4, blocks=1).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    x = torch.rand(1, 3, 5, 6)
    y = model(x)
    nearest = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    assert torch.allclose(y, nearest, atol=1e-6)
    assert y.min() >= 0 and y.max() <= 1


TINY_ENC = dict(stages=[[1, 3, 1, 1, 8], [1, 3, 2, 2, 8], [1, 5, 2, 2, 8], [1, 3, 2, 2, 16], [1, 3, 2, 2, 16]],
                stem=8, head=32, classes=5)

# a small config and input for every registered architecture
SAMPLES = {
    "ecbsr": (dict(scale=2, colors=3, channels=4, blocks=1, mid_mult=1.0), (1, 3, 8, 8), "upscale"),
    "fusion-colornet": (dict(width=8, global_size=32, global_dim=16, classes=5, mid_blocks=2),
                        (2, 1, 24, 16), "colorize"),
    "semantic-colornet": (dict(encoder_config=TINY_ENC, width=8, global_dim=16, classes=5, mid_blocks=1),
                          (2, 1, 32, 48), "colorize"),
    "efficientnet-lite": (TINY_ENC, (1, 3, 32, 32), "encoder"),
    "hasn": (dict(scale=3, colors=3, channels=8, blocks=2, attn=4, squeeze=2, window=5), (1, 3, 11, 9), "upscale"),
    "rlfn": (dict(scale=2, colors=3, channels=8, blocks=2, esa=4), (1, 3, 24, 20), "upscale"),
    "jsnet": (dict(task="denoise", channels=8, cells=TINY_CELLS), (2, 3, 16, 12), "denoise"),
}


# the sample input of each task's models: (scale of the values, forward arguments)
INPUTS = {"upscale": (1, {}), "colorize": (100, {"return_logits": True}), "encoder": (1, {}),
          "denoise": (1, {"level": torch.tensor([0.5, -1.0])})}


def test_every_architecture_has_a_sample():
    assert set(SAMPLES) == set(registry.ARCHS)


@pytest.mark.parametrize("arch", sorted(registry.ARCHS))
def test_registry_build_grad_and_roundtrip(arch, tmp_path, monkeypatch):
    config, shape, task = SAMPLES[arch]
    model = registry.ARCHS[arch].build(config)
    randomize(model, std=0.1)
    top, kwargs = INPUTS[task]
    x = torch.rand(*shape) * top
    model.train()
    out = model(x, **kwargs)
    loss = out[0].mean() + out[1].mean() if isinstance(out, tuple) else out.mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not no_grad, f"no gradient reaches {no_grad}"
    if getattr(model, "EXTERNAL", None):
        # a frozen encoder lives in its own shipped file: give it one
        monkeypatch.setenv("IMGRESTORE_WEIGHTS", str(tmp_path))
        weights.save(tmp_path / registry.COMPONENTS[model.cfg.encoder], model.encoder.state_dict(),
                     arch="efficientnet-lite", config=model.encoder.config(), task="encoder", scale=1)
    path = tmp_path / "m.safetensors"
    weights.save(path, registry.own_state(model), arch=arch, config=config, task=task,
                 scale=config.get("scale", 1))
    wf = weights.read(path)
    again = registry.build_from_weights(wf)
    model.eval(), again.eval()
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert not torch.isnan(again(x)).any()


def test_deploy_form_roundtrip(tmp_path):
    model = randomize(ECBSR(scale=3, channels=6, blocks=2)).eval()
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        ref = model(x)
    model.reparameterize()
    path = tmp_path / "deploy.safetensors"
    weights.save(path, model.state_dict(), arch="ecbsr", config=model.config(), task="upscale", scale=3)
    again = registry.build_from_weights(weights.read(path)).eval()
    with torch.no_grad():
        assert (again(x) - ref).abs().max() < 1e-4
