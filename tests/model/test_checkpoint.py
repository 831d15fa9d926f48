"""Checkpoints: our format round trip, and import of files written in the official release layout."""

import json
import shutil
from pathlib import Path
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from diffusers import UNet2DConditionModel

from stablemtl_edge import StableMTLError
from stablemtl_edge.config import get_preset
from stablemtl_edge.model.checkpoint import load_pretrained, save_pretrained
from stablemtl_edge.model.official import import_official
from stablemtl_edge.model.stablemtl import StableMTL
from stablemtl_edge.model.unet import ATTENTION_LAYERS, self_attention_path
from stablemtl_edge.tasks import TASK_NAMES, TASKS

PRESET = get_preset("tiny")
H, W = PRESET.resolution
RNG = np.random.default_rng(3)
FRAME1 = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
FRAME2 = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


# -- our format -------------------------------------------------------------------------------------------
def test_save_load_round_trip_gives_the_same_outputs(tmp_path):
    model = StableMTL.from_preset("tiny", multi_stream=True, seed=0)
    _randomise(model.main.task_attention, 1)
    save_pretrained(model, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["_class_name"] == "StableMTL" and config["multi_stream"] is True and "_package_version" in config
    loaded = load_pretrained(tmp_path / "ckpt")
    for mode in ("single", "multi"):
        a = model.predict_latents(FRAME1, FRAME2, mode=mode)[1]
        b = loaded.predict_latents(FRAME1, FRAME2, mode=mode)[1]
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_load_errors_are_one_line_and_name_the_file(tmp_path):
    with pytest.raises(StableMTLError, match="does not exist"):
        load_pretrained(tmp_path / "nope")
    model = StableMTL.from_preset("tiny", seed=0)
    save_pretrained(model, tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(StableMTLError, match="model.safetensors"):
        load_pretrained(tmp_path / "ckpt")


# -- official layout --------------------------------------------------------------------------------------
PROMPT_WORDS = sorted({w for t in TASKS for w in t.prompt.split()})


def _write_tokenizer(directory):
    """A CLIP BPE vocabulary whose merges rebuild each prompt word, written in the real file format."""
    from transformers import CLIPTokenizer

    chars = sorted({c for w in PROMPT_WORDS for c in w})
    vocab = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    merges = []
    for word in PROMPT_WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            parts = [parts[0] + parts[1]] + parts[2:]
            vocab.append(parts[0])
    vocab = list(dict.fromkeys(vocab))
    directory.mkdir(parents=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    tok = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tok.save_pretrained(directory)
    return tok


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """Official-layout files for the tiny preset with random weights, and the weights used to write them."""
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("official")
    sd2 = root / "stable-diffusion-2"
    tok = _write_tokenizer(sd2 / "tokenizer")
    torch.manual_seed(0)
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok.get_vocab()), hidden_size=PRESET.text_embed_dim, intermediate_size=48,
            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
            bos_token_id=0, eos_token_id=1, pad_token_id=1,
        )
    ).eval()
    text.save_pretrained(sd2 / "text_encoder")
    source = StableMTL.from_preset("tiny", multi_stream=True, seed=5)
    source.vae.vae.save_pretrained(sd2 / "vae")

    single = source.unet.unet.state_dict()
    torch.save(single, root / "single_stream_unet.pth")

    main_unet = UNet2DConditionModel(**dict(PRESET.unet))
    _randomise(main_unet, 7)
    _randomise(source.main.task_attention, 8)
    main_state = dict(main_unet.state_dict())
    for i, layer in enumerate(ATTENTION_LAYERS):
        for key, value in source.main.task_attention[i].state_dict().items():
            main_state[f"{self_attention_path(layer)}.{key}"] = value
    ckpt = root / "multi_stream" / "checkpoint" / "latest" / "unet"
    ckpt.mkdir(parents=True)
    torch.save(main_state, ckpt / "diffusion_pytorch_model.bin")
    (ckpt / "config.json").write_text(json.dumps({"_class_name": "UNet3DConditionModel"}))
    (root / "multi_stream" / "config.yaml").write_text(yaml.safe_dump(RELEASE_CONFIG))
    with tarfile.open(root / "multi_stream.tar.gz", "w:gz") as tar:
        tar.add(root / "multi_stream", arcname="multi_stream")
    return {
        "root": root, "sd2": sd2, "tokenizer": tok, "text": text, "single": single,
        "main_unet": main_unet, "task_attention": source.main.task_attention,
    }


# `multi_stream/config.yaml` as released: the training settings sit under `trainer`; n_attns = heads.
RELEASE_CONFIG = {"trainer": {"output_types": list(TASK_NAMES), "n_attns": 4, "batch_size": 8}}


@pytest.mark.parametrize("config, refusal", [
    ({"output_types": list(TASK_NAMES), "n_attns": 4}, "no `trainer` mapping"),
    ({"trainer": {"output_types": list(TASK_NAMES), "n_attns": 16}}, r"`trainer.n_attns` \(task-attention heads\) is 16"),
    ({"trainer": {"output_types": list(TASK_NAMES), "n_attns": 2}}, r"`trainer.n_attns` \(task-attention heads\) is 2"),
    ({"trainer": {"output_types": list(TASK_NAMES)[:3], "n_attns": 4}}, "`trainer.output_types` is"),
    ({"trainer": {"output_types": list(reversed(TASK_NAMES)), "n_attns": 4}}, "in this order"),
    ({"trainer": {"n_attns": 4}}, "`trainer.output_types` must be the list"),
])
def test_multi_stream_config_is_read_as_released(official, tmp_path, config, refusal):
    multi = tmp_path / "multi_stream"
    shutil.copytree(official["root"] / "multi_stream", multi)
    (multi / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(StableMTLError, match=refusal):
        import_official(official["root"] / "single_stream_unet.pth", official["sd2"], multi, preset="tiny")


def _clip_embedding(official, task):
    ids = official["tokenizer"](task.prompt, padding="longest", return_tensors="pt").input_ids
    with torch.no_grad():
        return official["text"](ids).last_hidden_state


def test_import_single_stream_equals_direct_computation(official):
    model = import_official(official["root"] / "single_stream_unet.pth", official["sd2"], preset="tiny")
    direct = UNet2DConditionModel(**dict(PRESET.unet))
    direct.load_state_dict(official["single"])
    sample = torch.randn(1, 12, H // 8, W // 8)
    with torch.no_grad():
        for task in TASKS:
            want = direct(sample, 999, encoder_hidden_states=_clip_embedding(official, task)).sample
            got = model.unet(sample, torch.tensor([task.index]))
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert model.unet.task_lengths.tolist() == [
        _clip_embedding(official, t).shape[1] for t in TASKS
    ]


@pytest.mark.parametrize("archive", [False, True])
def test_import_multi_stream_equals_direct_computation(official, archive):
    root = official["root"]
    multi = root / ("multi_stream.tar.gz" if archive else "multi_stream")
    model = import_official(root / "single_stream_unet.pth", official["sd2"], multi, preset="tiny")

    # Direct computation with plain diffusers UNets and forward hooks, independent of our processors.
    aux = UNet2DConditionModel(**dict(PRESET.unet))
    aux.load_state_dict(official["single"])
    main = official["main_unet"]
    tas = official["task_attention"]
    sample = torch.randn(1, 12, H // 8, W // 8)
    main_task = TASKS[1]
    feats: dict[int, list[torch.Tensor]] = {}
    with torch.no_grad():
        for task in TASKS:
            captured = []
            hooks = [
                aux.get_submodule(self_attention_path(layer)).register_forward_hook(lambda m, i, o: captured.append(o))
                for layer in ATTENTION_LAYERS
            ]
            aux(sample, 999, encoder_hidden_states=_clip_embedding(official, task))
            for h in hooks:
                h.remove()
            # hooks fire in execution order, which is the official index order (down, mid, up)
            feats[task.index] = captured

        def branch(index):
            def hook(module, inputs, s):
                ta = tas[index]
                name = main_task.key
                q = ta.task_to_q[name].net(ta.task_norm_q[name](s[0]))
                ks, vs = [], []
                for a in TASKS:
                    if a.key == name:
                        continue
                    f = feats[a.index][index][0]
                    mk, mv = ta.task_to_k[a.key], ta.task_to_v[a.key]
                    ks.append(mk.fc2(F.gelu(mk.fc1(ta.task_norm_k[a.key](f)))))
                    vs.append(mv.fc2(F.gelu(mv.fc1(ta.task_norm_v[a.key](f)))))
                c = s.shape[-1]
                d = c // 4
                k = torch.stack(ks, 1).view(-1, 6, 4, d).transpose(1, 2)
                v = torch.stack(vs, 1).view(-1, 6, 4, d).transpose(1, 2)
                attn = (q.view(-1, 4, 1, d) @ k.transpose(-1, -2) / d**0.5).softmax(-1) @ v
                return s + ta.to_out_task(attn.reshape(1, -1, c))

            return hook

        hooks = [
            main.get_submodule(self_attention_path(layer)).register_forward_hook(branch(i))
            for i, layer in enumerate(ATTENTION_LAYERS)
        ]
        want = main(sample, 999, encoder_hidden_states=_clip_embedding(official, main_task)).sample
        for h in hooks:
            h.remove()

        ids = torch.tensor([main_task.index])
        _, got_feats = model.unet(torch.cat([sample] * 7), torch.arange(7), return_features=True)
        stacked = [f[None] for f in got_feats]  # [1, 7, N, C]
        got = model.main(sample, ids, stacked)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_import_errors_name_the_key_or_file(official, tmp_path):
    root, sd2 = official["root"], official["sd2"]
    state = dict(official["single"])
    missing_key = next(iter(state))
    del state[missing_key]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(StableMTLError, match=missing_key.replace(".", r"\.")):
        import_official(tmp_path / "missing.pth", sd2, preset="tiny")

    state = dict(official["single"])
    state["conv_out.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(StableMTLError, match=r"conv_out\.bias.*shape"):
        import_official(tmp_path / "shape.pth", sd2, preset="tiny")

    state = dict(official["single"])
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(StableMTLError, match=r"unexpected.*extra\.weight"):
        import_official(tmp_path / "extra.pth", sd2, preset="tiny")

    data = (root / "single_stream_unet.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(StableMTLError, match="truncated.pth"):
        import_official(tmp_path / "truncated.pth", sd2, preset="tiny")

    with pytest.raises(StableMTLError, match="conv_in"):
        state = dict(official["single"])
        state["conv_in.weight"] = state["conv_in.weight"][:, :4]
        torch.save(state, tmp_path / "four.pth")
        import_official(tmp_path / "four.pth", sd2, preset="tiny")


def test_import_strips_a_module_prefix_and_unwraps_state_dict(official, tmp_path):
    wrapped = {"state_dict": {f"module.{k}": v for k, v in official["single"].items()}}
    torch.save(wrapped, tmp_path / "wrapped.pth")
    model = import_official(tmp_path / "wrapped.pth", official["sd2"], preset="tiny")
    torch.testing.assert_close(model.unet.unet.conv_in.weight, official["single"]["conv_in.weight"])


def _bin_folder(src, dst, stem):
    """Copy a diffusers/transformers folder with its safetensors weights re-saved as a torch ``.bin``."""
    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        torch.save(load_file(str(f)), dst / f"{stem}.bin")
        f.unlink()


def test_sd2_folder_with_bin_weights_imports_like_safetensors(official, tmp_path):
    sd2 = tmp_path / "sd2-bin"
    sd2.mkdir()
    shutil.copytree(official["sd2"] / "tokenizer", sd2 / "tokenizer")
    _bin_folder(official["sd2"] / "vae", sd2 / "vae", "diffusion_pytorch_model")
    _bin_folder(official["sd2"] / "text_encoder", sd2 / "text_encoder", "pytorch_model")
    assert (sd2 / "vae" / "diffusion_pytorch_model.bin").is_file() and (sd2 / "text_encoder" / "pytorch_model.bin").is_file()
    single = official["root"] / "single_stream_unet.pth"
    a = import_official(single, official["sd2"], preset="tiny")
    b = import_official(single, sd2, preset="tiny")
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, atol=0, rtol=0)

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "PWNED",))

    torch.save({"encoder.conv_in.weight": Payload()}, sd2 / "vae" / "diffusion_pytorch_model.bin")
    with pytest.raises(StableMTLError, match=r"diffusion_pytorch_model\.bin.*refused unread"):
        import_official(single, sd2, preset="tiny")
    assert not (tmp_path / "PWNED").exists()


def test_precomputed_embeddings_replace_the_text_encoder(official, tmp_path):
    from stablemtl_edge.model.embeddings import load_task_embeddings, save_task_embeddings

    single = official["root"] / "single_stream_unet.pth"
    a = import_official(single, official["sd2"], preset="tiny")
    file = save_task_embeddings(tmp_path / "embeddings.safetensors", a.unet.task_embeddings, a.unet.task_lengths)
    from safetensors.torch import load_file

    stored = load_file(str(file))
    assert sorted(stored) == sorted(TASK_NAMES)
    for task in TASKS:  # keyed by task name, unpadded: exactly the text encoder's output
        torch.testing.assert_close(stored[task.key], _clip_embedding(official, task)[0], atol=0, rtol=0)
    vae_only = tmp_path / "sd2-vae-only"
    shutil.copytree(official["sd2"] / "vae", vae_only / "vae")  # no text encoder, no tokenizer
    b = import_official(single, vae_only, official["root"] / "multi_stream", preset="tiny", embeddings=file)
    torch.testing.assert_close(b.unet.task_embeddings, a.unet.task_embeddings, atol=0, rtol=0)
    assert b.unet.task_lengths.tolist() == a.unet.task_lengths.tolist()
    with pytest.raises(StableMTLError, match=r"tokenizer` is missing.*--embeddings"):
        import_official(single, vae_only, preset="tiny")
    del stored["albedo"]
    from safetensors.torch import save_file

    save_file(stored, str(tmp_path / "six.safetensors"))
    with pytest.raises(StableMTLError, match=r"six\.safetensors.*keyed"):
        load_task_embeddings(tmp_path / "six.safetensors", PRESET.text_embed_dim)


def test_assigned_load_makes_the_files_tensors_the_parameters():
    """Streaming import: a UNet laid out on `meta` is filled by the file's own tensors, with no second copy."""
    from stablemtl_edge.model.weight_files import load_state_dict_checked

    with torch.device("meta"):
        module = torch.nn.Sequential(torch.nn.Conv2d(12, 8, 3), torch.nn.GroupNorm(2, 8))
    state = {k: torch.randn(v.shape) for k, v in module.state_dict().items()}
    load_state_dict_checked(module, state, "file.pth", assign=True)
    assert all(module.state_dict()[k].data_ptr() == v.data_ptr() for k, v in state.items())
    x = torch.randn(1, 12, 5, 5)
    expected = torch.nn.functional.group_norm(
        torch.nn.functional.conv2d(x, state["0.weight"], state["0.bias"]), 2, state["1.weight"], state["1.bias"])
    torch.testing.assert_close(module(x), expected)

    with torch.device("meta"):
        holey = torch.nn.Linear(2, 2)
        holey.register_buffer("scratch", torch.zeros(2), persistent=False)  # not in any state dict
    with pytest.raises(StableMTLError, match=r"^`file.pth` leaves `scratch` of Linear without values$"):
        load_state_dict_checked(holey, {k: torch.ones(v.shape) for k, v in holey.state_dict().items()}, "file.pth",
                                assign=True)
