"""The models the benchmarks time, built at a `model_scale.Scale`: the shared random Llama and InfiMM-HD around it.

InfiMM-HD is assembled through the package's public API (`from_components`), so the benchmarks time what users
build; each benchmark adds its own baseline (Mllama, LLaVA-style concatenation, ...) beside it.
"""

from __future__ import annotations

import torch
from model_scale import Scale
from transformers import AutoModelForCausalLM, LlamaConfig


def llama_config(scale: Scale) -> LlamaConfig:
    """The LLM both sides of every comparison share (MHA like Vicuna; random weights, timing only)."""
    return LlamaConfig(
        vocab_size=scale.vocab,
        hidden_size=scale.hidden,
        intermediate_size=scale.intermediate,
        num_hidden_layers=scale.layers,
        num_attention_heads=scale.heads,
        num_key_value_heads=scale.heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def build_llm(scale: Scale, dtype: torch.dtype, seed: int = 0):
    """A random Llama causal LM of the benchmark shape, in `dtype`, in eval mode."""
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(llama_config(scale)).to(dtype).eval()


def build_infimm(scale: Scale, dtype: torch.dtype, seed: int = 0, vision_depth: int | None = None):
    """InfiMM-HD at `scale`: random Llama + a small timm ViT + gated cross-attention, via the package's API.

    The ViT is kept shallow (its cost is outside every timed region); its width sets the cross-attention key width.
    The gates are set to 0.5 (instead of the zero init) so the vision keys actually change the text stream.
    """
    from infimm_hd import InfiMMHDVisionConfig, from_components
    from infimm_hd.byte_tokenizer import byte_level_tokenizer
    from infimm_hd.vision_tower import VisionTower

    tokenizer = byte_level_tokenizer()
    llm = build_llm(scale, torch.float32, seed)
    torch.manual_seed(seed + 1)
    tower = VisionTower(
        InfiMMHDVisionConfig(
            backend="timm",
            image_size=448,
            patch_size=scale.patch_size,
            width=scale.vision_width,
            depth=vision_depth or scale.vision_depth,
            num_heads=scale.vision_heads,
            mlp_ratio=4.0,
        )
    )
    torch.manual_seed(seed + 2)
    model = from_components(
        llm,
        tower,
        tokenizer,
        cross_attention_heads=scale.xattn_heads,
        cross_attention_head_dim=scale.xattn_head_dim,
        cross_attention_ff_mult=1.0,
        cross_attention_every_n_layers=scale.xattn_every,
        max_windows_inference=16,
    )
    with torch.no_grad():
        for block in model.cross_attention_blocks().values():
            block.attn_gate.fill_(0.5)
            block.ff_gate.fill_(0.5)
    model.generation_config.pad_token_id = 0
    return model.to(dtype).eval(), tokenizer


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
