"""Paper-scale shapes on the meta device and the config's exact JSON round trip."""

from __future__ import annotations

import json

import torch

import infimm_hd
from infimm_hd import InfiMMHDConfig


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_13b_parameter_counts_match_the_paper():
    model, processor = infimm_hd.build_model("paper-13b", device="meta")
    assert processor is None
    cfg = model.config
    assert cfg.cross_attention_layers == [3, 7, 11, 15, 19, 23, 27, 31, 35, 39]
    assert cfg.vision_config.tokens_per_crop == 1025
    xattn = sum(count(b) for b in model.cross_attention_blocks().values())
    vit, total = count(model.vision_tower), count(model)
    llm = total - vit - xattn
    # Paper: 18B total = ViT 4.4B + LLM 12.9B + cross-attention ~0.7B (0.63B derived for 12x64, FFN mult 1).
    assert 0.60e9 < xattn < 0.70e9, xattn
    assert 4.2e9 < vit < 4.5e9, vit
    assert 12.9e9 < llm < 13.1e9, llm
    assert 17.5e9 < total < 18.5e9, total
    block = model.cross_attention_blocks()[3]
    assert tuple(block.attn.to_kv.weight.shape) == (1536, 1792)
    assert tuple(block.attn.to_q.weight.shape) == (768, 5120)
    assert tuple(block.attn_gate.shape) == (5120,)
    assert next(model.parameters()).device == torch.device("meta")


def test_config_json_round_trip_is_exact(tmp_path, tiny):
    model, _ = tiny
    text = model.config.to_json_string()
    model.config.save_pretrained(tmp_path)
    loaded = InfiMMHDConfig.from_pretrained(tmp_path)
    assert loaded.to_json_string() == text
    data = json.loads(text)
    assert data["cross_attention_layers"] == [3, 7]
    assert data["text_config"]["model_type"] == "llama"
    assert data["vision_config"]["backend"] == "timm"
    assert loaded.image_token_id == model.config.image_token_id
