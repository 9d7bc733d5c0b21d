"""Model cards: the repository's MODEL_CARD.md and the README.md that `save_pretrained` writes beside the weights.

One template serves both: `render_model_card(model)` fills in the figures of a model (parameter counts by part,
cross-attention layers, tokens per crop, window budgets, bases). `python -m infimm_hd.paper_card` renders it for the
paper configuration (built on the meta device) and is how MODEL_CARD.md is produced; a test keeps them in sync.
The card reads the model it is given and imports nothing of the package, so saving can render it from below the
model.
"""

from __future__ import annotations

TEMPLATE = """\
---
library_name: infimm-hd
pipeline_tag: image-text-to-text
license: apache-2.0
tags:
- vision-language
- high-resolution
- cross-attention
- infimm-hd
---

# {title}

An InfiMM-HD-design vision-language model ([paper](https://arxiv.org/abs/2403.01487)) built with the
[`infimm-hd`](https://pypi.org/project/infimm-hd/) package: a vision transformer encodes a {window} px thumbnail of
the image plus {window} px windows cut from the image resized to a grid of multiples of {window}; the crop tokens of
each image reach the language model through gated cross-attention blocks (per-channel tanh gates initialised at
zero), so the language model's own sequence does not grow with the resolution. It loads with plain `transformers`
once `infimm_hd` is imported: no `trust_remote_code`, safetensors weights.

## Model details

| | |
|---|---|
| Language model | {llm} ({llm_layers} layers, hidden {llm_hidden}) |
| Vision tower | {vision} (width {vision_width}, {tokens_per_crop} tokens per {window} px crop) |
| Cross-attention | {num_blocks} gated blocks before decoder layers {layers}, {heads} heads x {head_dim}, FFN x{ff_mult} |
| Masking | each text token attends only to the latest preceding `<image>` (all crops of that image) |
| Windows | up to {max_train} in training, {max_infer} at inference, plus the thumbnail; fixed 2D sin-cos window positions |
| Parameters | {total} total: vision {vit}, language model {lm}, cross-attention {xattn} |
| Special tokens | `<image>` = {image_id}, `<|endofchunk|>` = {eoc_id} |

## Training stages (the paper's recipe)

| stage | resolution | trains | data (paper) |
|---|---|---|---|
| 1. pretraining | 224 | cross-attention | 140M image-text pairs and interleaved documents |
| 2. continued pretraining | 448 (position embeddings resampled) | ViT + cross-attention | 2.0M captioning/VQA/OCR mix |
| 3. dynamic-resolution adaptation | 448 thumbnail + up to 3x3 windows | ViT + cross-attention | same mix |
| 4. instruction fine-tuning | dynamic | cross-attention + language model | LLaVA-665k, LLaVAR, TextVQA, ScienceQA + synthetic |

## Evaluation

The paper's results for its 13B model (Vicuna-13B + EVA02-CLIP-E, dynamic resolution), **as reported in the
paper**, not measured by this package:

| VQAv2 | OKVQA | GQA | TextVQA | OCRVQA | STVQA | DocVQA (ablation) | POPE | MMMU val |
|---|---|---|---|---|---|---|---|---|
| 82.0 | 65.5 | 63.5 | 70.7 | 66.0 | 67.0 | 55.1 | 87.9 | 37.6 |

{measured}

## Intended use and limitations

Research on high-resolution image understanding: reading text, charts and small details that a single 448 px view
loses. Answers can be wrong or invented; the model inherits the biases of its language model, vision tower and
training data, and it has not been evaluated for safety-critical use. Images are tiled up to the configured window
budget; beyond it they are shrunk, so very fine detail in very large images can still be lost.

## Usage

```python
import infimm_hd  # registers the classes with transformers' Auto API (no trust_remote_code)
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

model_id = "{model_id}"  # a hub id or a local folder
model = AutoModelForImageTextToText.from_pretrained(model_id)
processor = AutoProcessor.from_pretrained(model_id)
image = Image.open("photo.jpg")
messages = [{{"role": "user", "content": [{{"type": "image", "image": image}}, {{"type": "text", "text": "What is written here?"}}]}}]
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
output = model.generate(**inputs, max_new_tokens=64, do_sample=False)
print(processor.decode(output[0, inputs["input_ids"].shape[1] :]))
```

## Citation

```bibtex
@article{{liu2024infimmhd,
  title   = {{InfiMM-HD: A Leap Forward in High-Resolution Multimodal Understanding}},
  author  = {{Liu, Haogeng and You, Quanzeng and Han, Xiaotian and Wang, Yiqi and Zhai, Bohan and Liu, Yongfei and
             Tao, Yunzhe and Huang, Huaibo and He, Ran and Yang, Hongxia}},
  journal = {{arXiv preprint arXiv:2403.01487}},
  year    = {{2024}}
}}
```
"""


def _billions(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def render_model_card(
    model, title: str | None = None, model_id: str = "path/to/checkpoint", measured: str | None = None
) -> str:
    """The card of `model` (an `InfiMMHDForConditionalGeneration`), with its own figures."""
    cfg = model.config
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    xattn = sum(count(b) for b in model.cross_attention_blocks().values())
    vit, total = count(model.vision_tower), count(model)
    sources = getattr(model, "base_sources", None) or {}
    llm_src = sources.get("language_model")
    llm_name = llm_src.name_or_path if llm_src is not None and llm_src.name_or_path else None
    if llm_src is not None and llm_src.loader == "smollm2-gguf":
        llm_name = "SmolLM2-135M-Instruct"
    vision_cfg = cfg.vision_config
    return TEMPLATE.format(
        title=title or f"InfiMM-HD ({cfg.text_config.model_type} language model)",
        window=cfg.window_size,
        llm=llm_name or f"`{cfg.text_config.model_type}`",
        llm_layers=cfg.text_config.num_hidden_layers,
        llm_hidden=cfg.text_config.hidden_size,
        vision=f"{vision_cfg.backend} `{vision_cfg.model_name}`"
        if vision_cfg.model_name
        else f"{vision_cfg.backend} {vision_cfg.architecture} ({vision_cfg.depth} blocks)",
        vision_width=model.vision_tower.width,
        tokens_per_crop=vision_cfg.tokens_per_crop,
        num_blocks=len(cfg.cross_attention_layers),
        layers=", ".join(map(str, cfg.cross_attention_layers)),
        heads=cfg.cross_attention_heads,
        head_dim=cfg.cross_attention_head_dim,
        ff_mult=f"{cfg.cross_attention_ff_mult:g}",
        max_train=cfg.max_windows_train,
        max_infer=cfg.max_windows_inference,
        total=_billions(total),
        vit=_billions(vit),
        lm=_billions(total - vit - xattn),
        xattn=_billions(xattn),
        image_id=cfg.image_token_id,
        eoc_id=cfg.end_of_chunk_token_id,
        measured=measured or "Figures measured by this package for this checkpoint: none recorded yet.",
        model_id=model_id,
    )
