"""The colorizer on a frozen pretrained encoder: the encoder's layers, the
encoder kept in its own file, loading, training with cached features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import noise_image, randomize
from imgrestore import load, weights
from imgrestore.color import l_to_gray, gray_to_l, luminance
from imgrestore.errors import WeightsError
from imgrestore.models.colorize import SemanticColorNet
from imgrestore.models.encoder import EfficientLite, SameConv
from imgrestore.registry import COMPONENTS, own_state, weights_dir
from imgrestore.tasks.colorize import colorize_pixels

# a tiny encoder of the same family: four taps (1/4 .. 1/32) and a head
TINY_ENC = dict(stages=[[1, 3, 1, 1, 8], [1, 3, 2, 2, 8], [1, 5, 2, 2, 8], [1, 3, 2, 2, 16], [1, 3, 2, 2, 16]],
                stem=8, head=32, classes=5)
ENC_FILE = COMPONENTS["encoder-efficientnet-lite0"]


def labelled_photos(tmp_path, n: int = 6):
    """A folder of `n` small colour photos named as ImageNet's (wnid first)."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(n):
        small = np.random.default_rng(i).integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((48, 40), Image.BILINEAR).save(data / f"n0000000{i}_{i}.png")
    return data


@pytest.fixture
def tiny_semantic(tmp_path, monkeypatch):
    """A weights folder holding a tiny random encoder under the shipped
    encoder's name, and a colorizer file trained 'with' it."""
    wdir = tmp_path / "weights"
    wdir.mkdir()
    enc = randomize(EfficientLite(**TINY_ENC), seed=1, std=0.3)
    weights.save(wdir / ENC_FILE, enc.state_dict(), arch="efficientnet-lite", config=enc.config(),
                 task="encoder", scale=1)
    cfg = dict(encoder_config=enc.config(), width=8, global_dim=16, classes=3, mid_blocks=1)
    model = randomize(SemanticColorNet(**cfg), seed=2, std=0.3)
    model.encoder.load_state_dict(enc.state_dict())
    path = tmp_path / "tiny-semantic.safetensors"
    weights.save(path, own_state(model), arch="semantic-colornet", config=model.config(), task="colorize", scale=1)
    monkeypatch.setenv("IMGRESTORE_WEIGHTS", str(wdir))
    return path, model.eval()


def test_l_to_gray_inverts_gray_to_l():
    g = torch.linspace(0, 1, 256)
    assert (l_to_gray(gray_to_l(g)) - g).abs().max() < 1e-5


@pytest.mark.parametrize("size,k", [(8, 3), (9, 3), (10, 5), (7, 5)])
def test_same_padding_is_tensorflows(size, k):
    # TF "SAME": output ceil(in / stride), the odd pixel of padding after
    conv = SameConv(2, 3, k, 2)
    x = torch.randn(1, 2, size, size)
    y = conv(x)
    assert y.shape[-1] == -(-size // 2)
    total = max((y.shape[-1] - 1) * 2 + k - size, 0)
    ref = F.conv2d(F.pad(x, (total // 2, total - total // 2) * 2), conv.weight, conv.bias, 2)
    assert torch.allclose(y, ref, atol=1e-6)


def test_gray_stem_equals_three_equal_channels():
    enc = randomize(EfficientLite(**TINY_ENC), std=0.3).eval()
    g = torch.rand(2, 1, 40, 24) * 2 - 1
    a = enc.features(g, gray=True)
    b = enc.features(g.expand(-1, 3, -1, -1))
    assert [t.shape[1] for t in a] == enc.channels
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b))


def test_shipped_encoder_is_lite0_converted_and_checked():
    wf = weights.read(weights_dir() / ENC_FILE)
    assert wf.arch == "efficientnet-lite" and wf.task == "encoder"
    assert wf.config == EfficientLite().config()
    assert wf.provenance["licence"] == "Apache-2.0"
    assert wf.provenance["check"]["max_logit_diff"] < 1e-3 and wf.provenance["check"]["top1_agreement"] == 1.0
    enc = EfficientLite(**wf.config)
    enc.load_state_dict(wf.tensors)
    assert sum(p.numel() for p in enc.parameters()) == 4_631_000  # Lite0's 4.65 M less the folded batch norms


def test_encoder_lives_in_its_own_file(tiny_semantic):
    path, model = tiny_semantic
    wf = weights.read(path)
    assert wf.tensors and not any(k.startswith("encoder.") for k in wf.tensors)
    r = load(path, device="cpu")
    px = np.asarray(noise_image(37, 52))
    # loaded = in memory (within a code value: the loaded one runs channels-last),
    # the encoder's tensors from the encoder file
    diff = np.abs(colorize_pixels(r.model, px, 64).astype(int) - colorize_pixels(model, px, 64))
    assert diff.max() <= 1 and diff.mean() < 0.01
    assert not any(p.requires_grad for p in r.model.encoder.parameters())


def test_luminance_kept_and_reference_changes_colours(tiny_semantic, tmp_path, cli):
    path, _ = tiny_semantic
    r = load(path, device="cpu")
    px = np.asarray(noise_image(45, 31))
    out = colorize_pixels(r.model, px, render_size=64)
    l_in = luminance(torch.from_numpy(px.copy()).permute(2, 0, 1)[None] / 255.0)
    l_out = luminance(torch.from_numpy(out).permute(2, 0, 1)[None].float() / 255.0)
    assert (l_in - l_out).abs().max() < 1.0
    Image.fromarray(px).save(tmp_path / "a.png")
    Image.fromarray(np.asarray(noise_image(64, 64, seed=5))).save(tmp_path / "ref.png")
    outs = []
    for extra in ([], ["--reference", tmp_path / "ref.png"]):
        o = tmp_path / f"o{len(outs)}.png"
        code, _, err = cli("colorize", "--model", path, tmp_path / "a.png", "-o", o, "--render-size", 64, *extra)
        assert code == 0, err
        outs.append(np.asarray(Image.open(o)))
    assert np.abs(outs[0].astype(int) - outs[1]).max() > 0


def test_wrong_encoder_is_a_clear_error(tiny_semantic, tmp_path, monkeypatch):
    path, _ = tiny_semantic
    other = tmp_path / "other"
    other.mkdir()
    enc = EfficientLite(**dict(TINY_ENC, head=48))
    weights.save(other / ENC_FILE, enc.state_dict(), arch="efficientnet-lite", config=enc.config(), task="encoder",
                 scale=1)
    monkeypatch.setenv("IMGRESTORE_WEIGHTS", str(other))
    with pytest.raises(WeightsError, match="not the encoder this model was trained with"):
        load(path, device="cpu")


def test_bins_head_reads_out_the_annealed_mean():
    from imgrestore.models.colorize import AB_RANGE, bin_centres
    from imgrestore.train.colorize import bins_ce

    m = SemanticColorNet(encoder_config=TINY_ENC, width=8, global_dim=16, head="bins").eval()
    z = torch.full((1, len(bin_centres()), 1, 1), -50.0)
    z[0, 37] = 10.0  # one bin far above the rest: the read-out is its centre
    x = torch.zeros(1, m.head.in_channels, 1, 1)
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.bias.copy_(z[0, :, 0, 0])
        ab, bins = m.read_out(x)
    assert torch.allclose(ab[0, :, 0, 0], bin_centres()[37], atol=1e-3)
    out = m(torch.rand(1, 1, 32, 32) * 100)
    assert out.shape == (1, 2, 16, 16) and out.abs().max() <= AB_RANGE
    # the soft target of a colour on a bin centre is that bin alone
    assert bins_ce(z, bin_centres()[37].reshape(1, 2, 1, 1)).item() < 1e-6


@pytest.mark.parametrize("loss_kind", ["l2", "bins+l2"])
def test_training_with_cached_features_resumes_and_loads(tiny_semantic, tmp_path, loss_kind):
    from imgrestore.train.colorize import make_semantic_task
    from imgrestore.train.loop import TrainOptions, train

    data = labelled_photos(tmp_path)
    enc_path = weights_dir() / ENC_FILE
    kw = dict(crop=32, batch=4, holdout=0.0, width=8, cache=tmp_path / "cache", crops_per_image=2,
              encoder=enc_path, log=lambda m: None, loss_kind=loss_kind, rebalance=0.5)
    task = make_semantic_task([str(data)], **kw)
    out = tmp_path / "c.safetensors"
    train(task, TrainOptions(steps=3, out=out, save_every=2, log=lambda m: None))
    wf = weights.read(out)
    assert wf.arch == "semantic-colornet" and wf.provenance["encoder"]["file"] == ENC_FILE
    assert wf.config["encoder"] == "encoder-efficientnet-lite0"  # the component named by the file it was given
    assert wf.config["head"] == ("bins" if loss_kind.startswith("bins") else "ab")
    assert not any(k.startswith("encoder.") for k in wf.tensors)
    assert (tmp_path / "cache" / "key.json").is_file()
    # the cache is reused, and a longer run resumes from the state
    logs = []
    task = make_semantic_task([str(data)], **dict(kw, log=logs.append))
    assert any("reusing" in m for m in logs)
    train(task, TrainOptions(steps=4, out=out, save_every=2, log=logs.append))
    assert any("resumed" in m for m in logs)
    r = load(out, device="cpu")
    assert r(np.zeros((9, 7), np.uint8)).shape == (9, 7, 3)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = randomize(SemanticColorNet(encoder_config=TINY_ENC, width=8, global_dim=16, dropout=0.5), std=0.3)
    l = torch.rand(1, 1, 32, 32) * 100
    m.train()
    with torch.no_grad():
        assert not torch.equal(m(l), m(l))
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(l), m(l))


def test_semantic_colorizer_exports_for_any_working_size(tiny_semantic, tmp_path):
    """SAME padding is arithmetic on the side, so the graph is right for
    sides that reach odd sizes inside the encoder (40 -> 20 -> 10 -> 5 -> 3)."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from imgrestore import tasks
    from imgrestore.export import export_model

    path, model = tiny_semantic
    out = tmp_path / "c.onnx"
    export_model(weights.read(path), out)
    io = tasks.get("colorize").net
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for h, w in ((40, 56), (64, 96), (24, 8)):
        l = torch.rand(1, 1, h, w) * 100
        with torch.no_grad():
            want = model(l)
        got = torch.from_numpy(sess.run([io.output], {io.input: l.numpy()})[0])
        assert got.shape == want.shape and (got - want).abs().max() < 1e-2


def test_shipped_colorizer_runs_on_the_gray_tuned_encoder_derived_from_lite0():
    """The shipped colorizer names the gray-tuned encoder; that file is the
    converted Lite0 with only its blocks after the 1/16 tap and its head
    changed (stem, earlier blocks and class layer bit for bit), says so,
    and keeps Lite0's licence; the colorizer carries its own retrained
    copy of that tail."""
    import hashlib

    col = weights.read(weights_dir() / "colorize.safetensors")
    assert col.config["encoder"] == "encoder-efficientnet-lite0-gray"
    gray = weights.read(weights_dir() / COMPONENTS["encoder-efficientnet-lite0-gray"])
    src_path = weights_dir() / ENC_FILE
    src = weights.read(src_path)
    assert gray.arch == src.arch == "efficientnet-lite" and gray.config == src.config
    assert gray.provenance["licence"] == src.provenance["licence"] == "Apache-2.0"
    assert gray.provenance["derived_from"]["sha256"] == hashlib.sha256(src_path.read_bytes()).hexdigest()
    cut = gray.provenance["cut"]
    assert cut == EfficientLite(**src.config).taps[2] + 1
    for name, t in gray.tensors.items():
        tuned = name.startswith("head.") or (name.startswith("blocks.") and int(name.split(".")[1]) >= cut)
        assert torch.equal(t, src.tensors[name]) != tuned, name
    m = gray.provenance["metrics"]
    assert m["holdout"]["agree"] > m["before"]["agree"] and m["holdout"]["kl"] < m["before"]["kl"]
    # the colorizer retrained a tail with its decoder (--tune-tail, from the
    # 1/16 map or, --tune-from 1/8, from the 1/8 one): its own tensors load
    # over the file's
    assert col.config["tune_tail"] is True
    tuned_from = EfficientLite(**src.config).taps[col.config.get("tune_from", 2)] + 1
    assert tuned_from <= cut
    tail = {k[8:] for k in col.tensors if k.startswith("encoder.")}
    assert tail == {k for k in gray.tensors if k.startswith("head.") or
                    (k.startswith("blocks.") and int(k.split(".")[1]) >= tuned_from)}
    r = load("colorize", device="cpu")
    assert torch.equal(r.model.state_dict()["encoder.head.weight"], col.tensors["encoder.head.weight"])
    assert torch.equal(r.model.state_dict()["encoder.stem.weight"], src.tensors["stem.weight"])


def test_gray_encoder_fine_tuning_moves_only_the_tail_and_closes_the_gap(tmp_path):
    """train gray-encoder on a tiny encoder: the held-out gap between its
    maps of gray crops and the source's maps of colour crops shrinks, the
    blocks before the cut (and the stem and fc) stay the source's bit for
    bit, and the written file is an encoder file that carries the source's
    licence."""
    from imgrestore.train.gray_encoder import make_gray_encoder_task
    from imgrestore.train.loop import TrainOptions, train

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):  # colourful, structured: hue depends on position and photo
        yy, xx = np.mgrid[0:96, 0:96] / 96.0
        a = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), np.sin(3 * (xx + yy) + 2 * i)], -1) * 0.4 + 0.5
        a = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
        Image.fromarray((a * 255).astype(np.uint8)).save(photos / f"p{i}.png")
    src = tmp_path / "enc.safetensors"
    enc = randomize(EfficientLite(**TINY_ENC), seed=1, std=0.3)
    weights.save(src, enc.state_dict(), arch="efficientnet-lite", config=enc.config(), task="encoder", scale=1,
                 provenance=dict(licence="Apache-2.0", origin="a test"))
    task = make_gray_encoder_task([str(photos)], encoder=src, cache=tmp_path / "cache", crop=64, batch=8,
                                  crops_per_image=4, holdout=0.3, held_crops=32, min_zoom=0.7, log=lambda m: None)
    out = tmp_path / "gray.safetensors"
    metrics = train(task, TrainOptions(steps=150, out=out, lr=3e-3, warmup=5, eval_every=1000, log=lambda m: None))
    before, after = metrics["before"], metrics["holdout"]
    assert after["tap"] < 0.9 * before["tap"] and after["head"] < before["head"] and after["kl"] <= before["kl"], (before, after)
    wf = weights.read(out)
    assert wf.arch == "efficientnet-lite" and wf.task == "encoder" and wf.config == enc.config()
    assert wf.provenance["licence"] == "Apache-2.0" and wf.provenance["cut"] == 4
    source = enc.state_dict()
    for name, t in wf.tensors.items():
        fixed = name.startswith(("stem.", "fc.", "blocks.0.", "blocks.1.", "blocks.2.", "blocks.3."))
        assert torch.equal(t, source[name]) == fixed, name
    # resumed from the cache, not re-encoded: the key matches
    assert (tmp_path / "cache" / "train" / "key.json").is_file()


def test_gray_encoder_needs_photos_to_hold_out(tmp_path):
    from imgrestore.train.gray_encoder import make_gray_encoder_task

    photos = tmp_path / "photos"
    photos.mkdir()
    noise_image(80, 80, seed=3).save(photos / "a.png")
    src = tmp_path / "enc.safetensors"
    enc = EfficientLite(**TINY_ENC)
    weights.save(src, enc.state_dict(), arch="efficientnet-lite", config=enc.config(), task="encoder", scale=1)
    with pytest.raises(ValueError, match="hold out"):
        make_gray_encoder_task([str(photos)], encoder=src, cache=tmp_path / "c", crop=64, holdout=0.0,
                               log=lambda m: None)


@pytest.mark.parametrize("tune_from", [2, 1])
def test_tuned_tail_trains_with_the_decoder_lives_in_its_file_and_loads_over_the_encoder(tiny_semantic, tmp_path,
                                                                                         tune_from):
    """`train colorize --tune-tail F [--tune-from 1/8]`: the encoder's blocks
    after its 1/16 (or 1/8) tap and its head train with the decoder from the
    cached maps; the file holds exactly those encoder tensors, loading puts
    them over the encoder file's, and the cached-map path computes what the
    full encoder computes."""
    from imgrestore.train.colorize import make_semantic_task
    from imgrestore.train.loop import TrainOptions, train

    data = labelled_photos(tmp_path)
    enc_path = weights_dir() / ENC_FILE
    task = make_semantic_task([str(data)], crop=32, batch=4, holdout=0.0, width=8, cache=tmp_path / "cache",
                              crops_per_image=2, encoder=enc_path, tune_tail=0.5, tune_from=tune_from,
                              log=lambda m: None)
    assert task.lr_scales(task.model) == {"encoder.": 0.5}
    out = tmp_path / "t.safetensors"
    train(task, TrainOptions(steps=6, out=out, lr=1e-2, warmup=1, save_every=3, log=lambda m: None))
    wf = weights.read(out)
    enc = weights.read(enc_path).tensors
    cut = EfficientLite(**TINY_ENC).taps[tune_from] + 1
    assert wf.config["tune_from"] == tune_from
    mine = sorted(k for k in wf.tensors if k.startswith("encoder."))
    assert mine == sorted(f"encoder.{k}" for k in enc if k.startswith("head.") or
                          (k.startswith("blocks.") and int(k.split(".")[1]) >= cut))
    assert any(not torch.equal(wf.tensors[k], enc[k[8:]]) for k in mine)  # trained
    assert wf.config["tune_tail"] is True and "kept in this file" in wf.provenance["tune_tail"]
    r = load(out, device="cpu")
    got = r.model.state_dict()
    for k, v in enc.items():
        assert torch.equal(got[f"encoder.{k}"], wf.tensors.get(f"encoder.{k}", v)), k
    l = torch.rand(1, 1, 40, 48) * 100
    with torch.no_grad():
        full = r.model.encode(l)
        again = r.model.retail(full)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(full, again))
    # resumable: the state holds the tail and its moments
    train(task, TrainOptions(steps=7, out=out, lr=1e-2, warmup=1, save_every=3, log=lambda m: None))


def test_colorizer_trains_under_bf16(tiny_semantic, tmp_path):
    """`train colorize --precision bf16`: the decoder and the tuned tail
    train under bfloat16 autocast from the cached maps, the loss stays
    finite, and the file says how it was trained."""
    from imgrestore.train.colorize import make_semantic_task
    from imgrestore.train.loop import TrainOptions, train

    data = labelled_photos(tmp_path)
    task = make_semantic_task([str(data)], crop=32, batch=4, holdout=0.0, width=8, cache=tmp_path / "cache",
                              crops_per_image=2, encoder=weights_dir() / ENC_FILE, tune_tail=0.5, tune_from=1,
                              log=lambda m: None)
    out = tmp_path / "b.safetensors"
    logs = []
    train(task, TrainOptions(steps=3, out=out, lr=1e-2, warmup=1, log=logs.append, precision="bf16"))
    assert weights.read(out).provenance["precision"] == "bf16"
    assert not any("nan" in m for m in logs), logs
