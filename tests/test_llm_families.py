"""The wrapper works on any HF causal LM family: Llama, Mistral, Qwen2 (tiny random configs)."""

from __future__ import annotations

import pytest
import torch
from conftest import bare_llm_copy, make_image, randomize_gates
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

from infimm_hd import InfiMMHDVisionConfig, from_components
from infimm_hd.byte_tokenizer import byte_level_tokenizer
from infimm_hd.processing import InfiMMHDProcessor
from infimm_hd.vision_tower import VisionTower

COMMON = dict(
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=8,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=259,
    max_position_embeddings=512,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
FAMILIES = {
    "llama": lambda: LlamaConfig(**COMMON),
    "mistral": lambda: MistralConfig(**COMMON, sliding_window=16),
    "qwen2": lambda: Qwen2Config(**COMMON, use_sliding_window=False),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@torch.no_grad()
def test_family_zero_gate_identity_and_generation(family):
    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_config(FAMILIES[family]())
    tower = VisionTower(InfiMMHDVisionConfig(image_size=448, patch_size=64, width=32, depth=1, num_heads=2))
    tokenizer = byte_level_tokenizer()
    model = from_components(llm, tower, tokenizer, cross_attention_heads=2, cross_attention_head_dim=16).eval()
    assert model.config.text_config.model_type == family
    assert model.config.cross_attention_layers == [3, 7]
    processor = InfiMMHDProcessor(tokenizer=tokenizer)
    inputs = processor(text=["a long enough prompt to cross the window <image> what?"], images=[[make_image(4, 0)]])
    bare = bare_llm_copy(model)
    ours = model(**inputs).logits
    ref = bare(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert torch.equal(ours, ref)
    randomize_gates(model)
    changed = model(**inputs).logits
    pos = int((inputs["input_ids"][0] == model.config.image_token_id).nonzero())
    assert torch.equal(changed[0, :pos], ref[0, :pos])
    assert not torch.allclose(changed[0, pos:], ref[0, pos:])
    out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
