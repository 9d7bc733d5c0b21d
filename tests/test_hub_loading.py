"""Hugging Face loading without remote code: Auto classes, safetensors only, strict keys."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import make_image, randomize_gates
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

import infimm_hd  # noqa: F401  (registers the Auto classes)
from infimm_hd import InfiMMHDConfig, InfiMMHDForConditionalGeneration


def saved_tiny(tmp_path):
    model, processor = infimm_hd.build_model("tiny")
    randomize_gates(model)
    model.save_pretrained(tmp_path)
    return model, processor


def test_auto_classes_load_a_saved_folder_with_identical_logits(tmp_path):
    model, processor = saved_tiny(tmp_path)
    files = sorted(os.listdir(tmp_path))
    assert any(f.endswith(".safetensors") for f in files)
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files), files
    assert isinstance(AutoConfig.from_pretrained(tmp_path), InfiMMHDConfig)
    inputs = processor(text=["Q: <image> what? A:"], images=[[make_image(4, 0)]])
    with torch.no_grad():
        ref = model(**inputs).logits
        for auto in (AutoModelForImageTextToText, AutoModelForCausalLM):
            loaded = auto.from_pretrained(tmp_path)
            assert type(loaded) is InfiMMHDForConditionalGeneration
            assert torch.equal(loaded.eval()(**inputs).logits, ref)


def test_loading_is_strict_and_names_the_keys(tmp_path):
    saved_tiny(tmp_path)
    path = tmp_path / "model.safetensors"
    state = load_file(path)
    gate = next(k for k in state if k.endswith("cross_attn.attn_gate"))
    state.pop(gate)
    state["extra.unknown_weight"] = torch.zeros(1)
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing_keys: " + gate.replace(".", r"\.")) as err:
        AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert "extra.unknown_weight" in str(err.value)
    model = InfiMMHDForConditionalGeneration.from_pretrained(tmp_path, strict=False)
    assert isinstance(model, InfiMMHDForConditionalGeneration)


def test_dtype_argument_is_honoured(tmp_path):
    saved_tiny(tmp_path)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.real_llm
def test_smollm2_save_and_auto_load_identical_logits(tmp_path):
    model, processor = infimm_hd.build_model("smollm2-135m")
    randomize_gates(model, scale=0.1)
    model.save_pretrained(tmp_path)
    inputs = processor(text=["<image>What is this?"], images=[[make_image(1, 3)]])
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def folder_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_trained_only_save_of_tiny_reloads_identical_logits(tmp_path):
    model, processor = infimm_hd.build_model("tiny")
    randomize_gates(model)
    model.save_pretrained(tmp_path, trained_only=True)
    assert sorted(os.listdir(tmp_path)) == [
        "README.md",
        "config.json",
        "infimm_hd_manifest.json",
        "trained.safetensors",
    ]
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    inputs = processor(text=["Q: <image> what? A:"], images=[[make_image(4, 1)]])
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_trained_only_manifest_rejects_tampered_weights(tmp_path):
    model, _ = infimm_hd.build_model("tiny")
    model.save_pretrained(tmp_path, trained_only=True)
    state = load_file(tmp_path / "trained.safetensors")
    state.pop(next(iter(state)))
    save_file(state, tmp_path / "trained.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="keys its manifest lists"):
        AutoModelForImageTextToText.from_pretrained(tmp_path)


@pytest.mark.real_llm
def test_smollm2_trained_only_is_small_and_reloads_identical_logits(tmp_path):
    model, processor = infimm_hd.build_model("smollm2-135m")
    randomize_gates(model, scale=0.1)
    model.language_model.requires_grad_(False)  # stages 1-3: the LLM is frozen, the blocks train
    for block in model.cross_attention_blocks().values():
        block.requires_grad_(True)
    full, small = tmp_path / "full", tmp_path / "small"
    model.save_pretrained(full)
    model.save_pretrained(small, trained_only=True)
    ratio = folder_bytes(full) / folder_bytes(small)
    assert ratio >= 10, f"trained-only save is only {ratio:.1f}x smaller"
    loaded = AutoModelForImageTextToText.from_pretrained(small)
    inputs = processor(text=["<image>What is this?"], images=[[make_image(4, 2)]])
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_hub_id_loads_through_the_huggingface_hub_cache(tmp_path):
    """A folder laid out like a hub repo in the huggingface_hub cache loads by its id (nothing is downloaded)."""
    model, processor = infimm_hd.build_model("tiny")
    randomize_gates(model)
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--infimm--tiny-test"
    snapshot = repo / "snapshots" / revision
    model.save_pretrained(snapshot)
    processor.save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    kw = dict(cache_dir=tmp_path, local_files_only=True)
    loaded = AutoModelForImageTextToText.from_pretrained("infimm/tiny-test", **kw)
    loaded_processor = AutoProcessor.from_pretrained("infimm/tiny-test", **kw)
    inputs = loaded_processor(text=["<image> hi"], images=[[make_image(1, 0)]])
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_device_map_loading(tmp_path):
    model, processor = saved_tiny(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path, device_map="auto")
    inputs = processor(text=["<image> hi"], images=[[make_image(1, 1)]])
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_sharded_save_reloads_strictly(tmp_path):
    """Large models are written as several safetensors shards plus an index; loading them back is still strict."""
    model, processor = infimm_hd.build_model("tiny")
    randomize_gates(model)
    model.save_pretrained(tmp_path, max_shard_size="300KB")
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file(), shards
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    inputs = processor(text=["<image> hi"], images=[[make_image(1, 2)]])
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)
