"""Convert the official InfiMM-HD checkpoint (`Infi-MM/infimm-hd`) into this package's safetensors format.

The official weights are one pickled `pytorch_model.bin` (36 GB, bf16) of the `Flamingo` module tree, optionally
under a `model.` prefix (the HF wrapper's attribute), with these parts (see the design notes, section 5.4):

    vision_encoder.*                                  EVA-CLIP-E: post-norm blocks, fused qkv + q_bias/v_bias
    lang_encoder.model.layers.{j}.decoder_layer.*     every Llama decoder layer, under the FlamingoLayer wrapper
    lang_encoder.model.layers.{j}.gated_cross_attn_layer.*   the gated cross-attention block before layer j
    lang_encoder.model.{embed_tokens,norm}.*, lang_encoder.lm_head.weight
    lang_encoder.old_decoder_blocks.{j}.*             alias of ...layers.{j}.decoder_layer.* (shared modules)
    lang_encoder.gated_cross_attn_layers.{j}.*        alias of ...layers.{j}.gated_cross_attn_layer.*

They map onto `InfiMMHDForConditionalGeneration` as follows:

    vision_encoder.X                           -> vision_tower.model.X      (timm `Eva` uses the EVA-CLIP names)
    lang_encoder.model.layers.{j}.decoder_layer.X
                                               -> language_model.model.layers.{j}.decoder_layer.X  (j cross layer)
                                               -> language_model.model.layers.{j}.X                (other layers)
    lang_encoder.model.layers.{j}.gated_cross_attn_layer.X -> language_model.model.layers.{j}.cross_attn.X
    lang_encoder.X                             -> language_model.X

Dropped on purpose: the aliases (after checking they hold the same values as their canonical twins), the tower's
final `norm` (unless `post_norm`) and CLIP projection `head`, vision blocks after `feature_layer`, and any rotary
`inv_freq` buffers. Everything else must map onto a parameter of the same shape, and every parameter must be
filled: an unknown, missing or mis-shaped key is an error that names it.

Safety: the `.bin` is read only with `torch.load(..., weights_only=True)` (no arbitrary unpickling), memory-mapped
when possible, and the model is assembled with its parameters on the meta device and the loaded tensors assigned
in place, so the checkpoint is never held twice. Output is safetensors only (`save_pretrained`).

This package holds the converter in one module per concern (imports run down this list, never back up):

    report.py                 ConversionReport, filled by every stage and printed by the command line
    checkpoint_reading.py     the official folder / shards / single file, read safely (weights_only=True)
    key_mapping.py            official key patterns, prefix and alias folding, official key -> our key
    config_translation.py     our config from the official config.json or from the tensor shapes
    state_dict_conversion.py  the strict renaming onto our model's keys and shapes (gates broadcast)
    tokenizer_files.py        copying the tokenizer files, checking the two special token ids
    end_to_end.py             `convert`: read, configure, convert, assign, save, copy the tokenizer
    command_line.py           `main`, the `convert-official` command

Command line: `python -m infimm_hd.convert_official SRC DST` (`__main__.py`; see `command_line.main`).
"""

from .checkpoint_reading import load_official_checkpoint
from .command_line import main
from .config_translation import (
    CROSS_ATTENTION_HEAD_DIM,
    OFFICIAL_END_OF_CHUNK_TOKEN_ID,
    OFFICIAL_IMAGE_TOKEN_ID,
    infer_config,
    official_config,
)
from .end_to_end import convert
from .report import ConversionReport
from .state_dict_conversion import convert_state_dict
from .tokenizer_files import END_OF_CHUNK_TOKEN, IMAGE_TOKEN, TOKENIZER_FILES

__all__ = [
    "CROSS_ATTENTION_HEAD_DIM",
    "END_OF_CHUNK_TOKEN",
    "IMAGE_TOKEN",
    "OFFICIAL_END_OF_CHUNK_TOKEN_ID",
    "OFFICIAL_IMAGE_TOKEN_ID",
    "TOKENIZER_FILES",
    "ConversionReport",
    "convert",
    "convert_state_dict",
    "infer_config",
    "load_official_checkpoint",
    "main",
    "official_config",
]
