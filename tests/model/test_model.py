"""The torch model: architecture sizes, conditioning, multi-stream equivalences and pass counts."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stablemtl_edge import StableMTLError
from stablemtl_edge.config import get_preset
from stablemtl_edge.model.multistream import auxiliary_tasks
from stablemtl_edge.model.stablemtl import StableMTL, unet_input
from stablemtl_edge.model.task_attention import TaskAttention
from stablemtl_edge.model.unet import ATTENTION_LAYERS, build_unet, self_attention_path, widen_conv_in
from stablemtl_edge.tasks import TASK_NAMES
from tests.tiny_model import tiny_with_active_task_attention

H, W = get_preset("tiny").resolution
RNG = np.random.default_rng(0)
FRAME1 = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
FRAME2 = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model() -> StableMTL:
    return StableMTL.from_preset("tiny", multi_stream=True, seed=0)


@pytest.fixture(scope="module")
def trained_like(model) -> StableMTL:
    """The tiny model with non-zero task-attention outputs, as after stage-2 training."""
    return tiny_with_active_task_attention().eval()


def test_sd2_parameter_counts_match_the_official_architecture():
    preset = get_preset("sd2")
    with torch.device("meta"):
        unet = build_unet(preset)
        attention = [TaskAttention(c, preset.task_q_hidden, preset.task_heads) for c in preset.attention_channels]
    assert sum(p.numel() for p in unet.parameters()) == 865_933_764
    assert len(unet.state_dict()) == 686
    assert sum(p.numel() for m in attention for p in m.parameters()) == 390_528_320
    assert sum(len(m.state_dict()) for m in attention) == 2_496
    assert unet.conv_in.weight.shape == (320, 12, 3, 3)


def test_attention_layers_are_the_16_self_attention_paths():
    unet = build_unet(get_preset("tiny"))
    for layer in ATTENTION_LAYERS:
        unet.get_submodule(self_attention_path(layer))
    n_transformers = sum(1 for name, _ in unet.named_modules() if name.endswith("transformer_blocks.0"))
    assert n_transformers == len(ATTENTION_LAYERS) == 16


def test_widened_conv_in_reproduces_the_pretrained_response():
    w4 = torch.randn(8, 4, 3, 3)
    z = torch.randn(2, 4, 6, 6)
    w12 = widen_conv_in(w4)
    assert w12.shape == (8, 12, 3, 3)
    torch.testing.assert_close(F.conv2d(torch.cat([z, z, z], 1), w12), F.conv2d(z, w4), atol=1e-5, rtol=1e-5)


def test_padded_masked_embeddings_equal_the_unpadded_result(model):
    unet = model.unet
    sample = torch.randn(1, 12, H // 8, W // 8)
    for t in range(7):
        length = int(unet.task_lengths[t])
        ref = unet.unet(sample, 999, encoder_hidden_states=unet.task_embeddings[t : t + 1, :length]).sample
        out = unet(sample, torch.tensor([t]))
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_mixed_task_batch_equals_rows_run_alone(trained_like):
    sample = torch.randn(3, 12, H // 8, W // 8)
    ids = torch.tensor([2, 5, 0])
    with torch.no_grad():
        batched = trained_like.unet(sample, ids)
        alone = torch.cat([trained_like.unet(sample[i : i + 1], ids[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
        feats = [torch.randn(3, 7, f.shape[1], f.shape[2]) for f in trained_like.unet(sample, ids, True)[1]]
        main = trained_like.main(sample, ids, feats)
        main_alone = torch.cat([trained_like.main(sample[i : i + 1], ids[i : i + 1], [f[i : i + 1] for f in feats]) for i in range(3)])
        torch.testing.assert_close(main, main_alone, atol=1e-5, rtol=1e-5)


def test_fresh_multi_stream_equals_single_stream(model):
    single = model.predict_latents(FRAME1, FRAME2, mode="single")[1]
    multi = model.predict_latents(FRAME1, FRAME2, mode="multi")[1]
    assert (single - multi).abs().max().item() <= 1e-6


@pytest.mark.parametrize("tasks", [["depth"], ["depth", "normal", "semantic"], list(TASK_NAMES)])
def test_pass_counts(model, tasks):
    k = len(tasks)
    frame2 = FRAME2 if any("flow" in t for t in tasks) else None
    model.counters.clear()
    model.predict(FRAME1, frame2, tasks, mode="single")
    assert model.counters["unet_rows"] == k and model.counters["decoder_rows"] == k
    model.counters.clear()
    model.predict(FRAME1, frame2, tasks, mode="multi")
    assert model.counters["unet_rows"] == (6 if k == 1 else 7)
    assert model.counters["unet_main_rows"] == k
    assert model.counters["encoder_rows"] == (2 if frame2 is not None else 1)


def test_auxiliary_tasks_rule():
    assert auxiliary_tasks([1]) == [0, 2, 3, 4, 5, 6]
    assert auxiliary_tasks([1, 2]) == list(range(7))


def _reference_task_attention(ta: TaskAttention, s, feats, task_ids, dropped=()):
    """Loop form of the official branch: per row, per pixel, over the other tasks' tokens."""
    out = torch.empty_like(s)
    heads, d = ta.heads, s.shape[-1] // ta.heads
    for b in range(s.shape[0]):
        m = TASK_NAMES[int(task_ids[b])]
        q = ta.task_to_q[m].net(ta.task_norm_q[m](s[b]))  # [N, C]
        ks, vs = [], []
        for a, name in enumerate(TASK_NAMES):
            if name == m or a in dropped:
                continue
            f = feats[b, a]
            mk, mv = ta.task_to_k[name], ta.task_to_v[name]
            ks.append(mk.fc2(F.gelu(mk.fc1(ta.task_norm_k[name](f)))))
            vs.append(mv.fc2(F.gelu(mv.fc1(ta.task_norm_v[name](f)))))
        k, v = torch.stack(ks, 1), torch.stack(vs, 1)  # [N, T', C]
        qh = q.view(-1, heads, 1, d)
        kh = k.view(k.shape[0], k.shape[1], heads, d).transpose(1, 2)
        vh = v.view(v.shape[0], v.shape[1], heads, d).transpose(1, 2)
        attn = (qh @ kh.transpose(-1, -2) / d**0.5).softmax(-1) @ vh  # [N, heads, 1, d]
        out[b] = s[b] + ta.to_out_task(attn.reshape(-1, heads * d))
    return out


def test_vectorised_task_attention_matches_the_loop_form(trained_like):
    ta = trained_like.main.task_attention[3]
    c = ta.channels
    s, feats, ids = torch.randn(3, 10, c), torch.randn(3, 7, 10, c), torch.tensor([1, 4, 6])
    with torch.no_grad():
        torch.testing.assert_close(ta(s, feats, ids), _reference_task_attention(ta, s, feats, ids), atol=1e-5, rtol=1e-5)
        drop = torch.zeros(3, 7, dtype=torch.bool)
        drop[:, 2] = True
        torch.testing.assert_close(
            ta(s, feats, ids, drop), _reference_task_attention(ta, s, feats, ids, dropped=(2,)), atol=1e-5, rtol=1e-5
        )


def test_training_mask_drops_an_attended_auxiliary_task(trained_like):
    proc = trained_like.main.unet.self_attention(0).processor
    ta = proc.module
    s, feats, ids = torch.randn(2, 6, ta.channels), torch.randn(2, 7, 6, ta.channels), torch.tensor([1, 1])
    ta.train()
    try:
        for _ in range(5):
            drop = proc._draw_masked_task(s, feats, ids)
            assert drop.sum(dim=1).tolist() == [1, 1]
            assert not drop[:, 1].any()  # never the main task itself: its weight is 0
    finally:
        ta.eval()


def test_predict_decodes_every_task_in_its_units(model):
    preds = model.predict(FRAME1, FRAME2)
    assert preds["depth"].shape == (H, W) and 0 <= preds["depth"].min() <= preds["depth"].max() <= 1
    np.testing.assert_allclose(np.linalg.norm(preds["normal"], axis=2), 1.0, atol=1e-4)
    assert preds["semantic"].dtype == np.uint8 and preds["semantic"].max() < 8
    assert preds["optical_flow"].shape == (H, W, 2) and preds["scene_flow"].shape == (H, W, 3)


def test_predict_rejects_bad_frames(model):
    with pytest.raises(StableMTLError, match="multiple of 64"):
        model.predict(np.zeros((70, 128, 3), np.uint8), tasks="depth")
    with pytest.raises(StableMTLError, match="frame2"):
        model.predict(FRAME1, None, "optical_flow")
    with pytest.raises(StableMTLError, match="uint8"):
        model.predict(FRAME1.astype(np.float32), tasks="depth")


def test_unet_input_order():
    z1, z2 = torch.ones(1, 4, 2, 2), 2 * torch.ones(1, 4, 2, 2)
    x = unet_input(z1, z2)
    assert x[:, :4].eq(1).all() and x[:, 4:8].eq(2).all() and x[:, 8:].eq(0).all()
    assert unet_input(z1)[:, 4:8].eq(1).all()


def test_latent_entry_equals_the_frame_entry(trained_like):
    z = trained_like.encode(np.stack([FRAME1, FRAME2]))
    for mode in ("single", "multi"):
        frames = trained_like.predict_latents(FRAME1, FRAME2, mode=mode)[1]
        latents = trained_like.predict_from_latents(z[:1], z[1:], mode=mode)[1]
        assert torch.equal(frames, latents)


def test_latent_entry_takes_any_size_the_unet_takes(trained_like):
    z1, z2 = torch.randn(1, 4, 8, 24), torch.randn(1, 4, 8, 24)  # 64x192 pixels: no frame size needed
    specs, out = trained_like.predict_from_latents(z1, z2, ["depth", "optical_flow"], mode="multi")
    assert [t.key for t in specs] == ["depth", "optical_flow"] and out.shape == (2, 4, 8, 24)


def test_task_attention_switch_leaves_the_main_streams_own_unet(trained_like):
    """Branch off, the main stream is exactly its UNet run as a single-stream model; branch on, it is not."""
    z1, z2 = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    alone = StableMTL.from_preset("tiny", seed=3)
    alone.unet.unet.load_state_dict(trained_like.main.unet.unet.state_dict())
    reference = alone.predict_from_latents(z1, z2, mode="single")[1]
    trained_like.counters.clear()
    off = trained_like.predict_from_latents(z1, z2, mode="multi", task_attention=False)[1]
    assert trained_like.counters["unet_rows"] == 0  # no auxiliary passes are run for a branch that is off
    torch.testing.assert_close(off, reference, atol=1e-6, rtol=0)
    on = trained_like.predict_from_latents(z1, z2, mode="multi")[1]
    assert (on - off).abs().max().item() > 1e-3


@pytest.mark.parametrize("z1, z2, tasks, branch, message", [
    (torch.randn(4, 8, 8), None, ["depth"], True, r"`z1` must be one float latent \[1, 4, h, w\]"),
    (torch.randn(1, 4, 8, 12), None, ["depth"], True, "12x8 latent cells: the UNet needs a multiple of 8"),
    (torch.randn(1, 4, 8, 8), None, ["optical_flow"], True, r"optical_flow need\(s\) `z2`"),
    (torch.randn(1, 4, 8, 8), torch.randn(1, 4, 16, 8), ["depth"], True, "must have the shape of `z1`"),
    (torch.randn(1, 4, 8, 8), None, ["depth"], False, "use mode `multi`"),  # a single stream has no branch
])
def test_latent_entry_refuses_bad_latents(trained_like, z1, z2, tasks, branch, message):
    with pytest.raises(StableMTLError, match=message):
        trained_like.predict_from_latents(z1, z2, tasks, mode="single", task_attention=branch)
