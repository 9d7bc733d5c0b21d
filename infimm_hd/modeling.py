"""`InfiMMHDForConditionalGeneration`: a frozen ViT, gated cross-attention, and any Hugging Face causal LM.

Shape legend
    B   prompts (text rows)      T   text tokens        V   vocabulary
    N   crops in the batch       I   images in the batch (one `<image>` token each)
    S   vision keys per prompt   Dv  vision width

Vision inputs (built by the processor):
    pixel_values   (N, 3, 448, 448)  every crop of every image: thumbnail first, then the windows row-major
    image_grids    (I, 2)            (rows, cols) of each image's window grid
    image_sample_index (I,) optional prompt index of each image, checked against the `<image>` tokens

The LLM is the caller's own `PreTrainedModel`; its decoder layers at `config.cross_attention_layers` are wrapped
(explicitly, see `xattn.CrossAttentionDecoderLayer`) and everything else about it is untouched, so with the gates
at zero the model is the base LLM, logit for logit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration import InfiMMHDConfig
from .cross_attention_context import CrossAttentionContext, CrossAttentionInputs
from .linear_cross_entropy import IGNORE_INDEX, linear_cross_entropy
from .linear_logprobs import entropy_from_logits, linear_token_logprobs, logprobs_of
from .media_mask import cross_attention_mask, text_time
from .media_packing import add_window_positions, crops_per_image, pack_media
from .pretrained_io import CheckpointIO
from .varlen_attention import flash_varlen_kernel, varlen_segments
from .vision_tower import VisionTower
from .xattn import CrossAttentionBlockConfig, CrossAttentionDecoderLayer, GatedCrossAttentionBlock

# LLM families whose causal-LM head is exactly `lm_head(last_hidden_state)` (no logit soft-capping or scaling, no
# auxiliary loss): `skip_logits` computes their loss from the hidden states with the chunked linear + cross-entropy.
# Any other family gets the same loss from its own head, at the scored positions only.
PLAIN_HEAD_FAMILIES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "olmo", "olmo2", "smollm3", "starcoder2"}
)


@dataclass
class InfiMMHDCausalLMOutput(ModelOutput):
    """`CausalLMOutputWithPast` plus the vision context to pass to the next decoding call."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Any = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attention_context: CrossAttentionContext | None = None
    token_logprobs: torch.Tensor | None = None
    token_entropy: torch.Tensor | None = None


def decoder_layers(language_model: PreTrainedModel) -> nn.ModuleList:
    """The decoder-layer list of a causal LM (`model.layers` for Llama/Mistral/Qwen2/Gemma/Phi3, ...)."""
    decoder = language_model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(
            f"{type(language_model).__name__}: cannot find its decoder layers (expected `get_decoder().layers`, a "
            "ModuleList); this LLM family is not supported yet"
        )
    return layers


class InfiMMHDPreTrainedModel(CheckpointIO):
    """Config class, init and HF capability flags; saving/loading (strict, trained-only, card) is `CheckpointIO`'s."""

    config_class = InfiMMHDConfig
    config: InfiMMHDConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["CrossAttentionDecoderLayer", "VisionTower"]

    def _init_weights(self, module: nn.Module) -> None:
        # Only the fusion blocks are ours to initialise (PyTorch defaults, gates at zero, as in the paper); the LLM
        # initialises itself and the vision tower keeps timm/open_clip's own initialisation.
        if isinstance(module, GatedCrossAttentionBlock):
            for sub in module.modules():
                if isinstance(sub, (nn.Linear, nn.LayerNorm)):
                    sub.reset_parameters()
            nn.init.zeros_(module.attn_gate)
            nn.init.zeros_(module.ff_gate)


class InfiMMHDForConditionalGeneration(InfiMMHDPreTrainedModel, GenerationMixin):
    """Vision tower + causal LM with gated cross-attention blocks before every `cross_attention_layers` layer."""

    def __init__(
        self,
        config: InfiMMHDConfig,
        language_model: PreTrainedModel | None = None,
        vision_tower: VisionTower | None = None,
    ):
        super().__init__(config)
        self.vision_tower = vision_tower if vision_tower is not None else VisionTower(config.vision_config)
        for module in self.vision_tower.modules():
            module._is_hf_initialized = True  # keep the tower's own init (see _init_weights)
        if language_model is None:
            language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.language_model = language_model
        block_cfg = CrossAttentionBlockConfig(
            text_dim=config.text_config.hidden_size,
            vision_dim=self.vision_tower.width,
            heads=config.cross_attention_heads,
            head_dim=config.cross_attention_head_dim,
            ff_mult=config.cross_attention_ff_mult,
        )
        layers = decoder_layers(language_model)
        for idx in config.cross_attention_layers:
            layers[idx] = CrossAttentionDecoderLayer(layers[idx], GatedCrossAttentionBlock(block_cfg), idx)
        self.post_init()
        self._stop_at_end_of_chunk()

    def _stop_at_end_of_chunk(self) -> None:
        """Make `generate` stop at `<|endofchunk|>` as well as at the LLM's EOS: the paper's template ends every
        answer with it ("<|endofchunk|> replaces EOS"), and a chat template that ends turns with EOS is unaffected."""
        eoc = self.config.end_of_chunk_token_id
        if eoc is None or self.generation_config is None:
            return
        eos = self.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if eoc not in eos:
            self.generation_config.eos_token_id = eos + [eoc]

    # -- Hugging Face plumbing -------------------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module | None:
        return self.language_model.get_output_embeddings()

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    def cross_attention_blocks(self) -> dict[int, GatedCrossAttentionBlock]:
        """Layer index -> its gated cross-attention block (the parameters stage 1 trains)."""
        layers = decoder_layers(self.language_model)
        return {idx: layers[idx].cross_attn for idx in self.config.cross_attention_layers}

    def set_window_size(self, window_size: int) -> None:
        """Change the crop size the model takes (stage 1 trains at 224, later stages at 448).

        Resamples the vision tower's position embedding and keeps `config.window_size` and
        `config.vision_config.image_size` in step with it, so a saved model reloads at the new size. The processor's
        `image_processor.window_size` must be changed to match.
        """
        self.vision_tower.set_image_size(window_size)
        self.config.vision_config.image_size = window_size
        self.config.window_size = window_size

    # -- vision ---------------------------------------------------------------------------------------------------
    def encode_media(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        image_grids: torch.Tensor,
        image_sample_index: torch.Tensor | None = None,
        cache_kv: bool = False,
        vision_tokens: torch.Tensor | None = None,
    ) -> CrossAttentionContext:
        """Run the vision tower once and pack the crop tokens into per-prompt keys.

        ``vision_tokens`` (N, L, Dv): the tower's output for these crops, computed earlier (a server's cache of
        images it has seen); then the tower is not run and ``pixel_values`` must be None. Every consistency check
        runs before any compute, so a bad batch fails fast with a message that says what to fix.
        """
        if (pixel_values is None) == (vision_tokens is None):
            raise ValueError("pass exactly one of pixel_values and vision_tokens")
        crops = pixel_values if pixel_values is not None else vision_tokens
        image_token_id = self.config.image_token_id
        images_per_prompt = (input_ids == image_token_id).sum(dim=-1)  # (B,)
        image_grids = torch.as_tensor(image_grids, dtype=torch.long, device=images_per_prompt.device).reshape(-1, 2)
        num_images = int(images_per_prompt.sum())
        if num_images != len(image_grids):
            raise ValueError(
                f"the prompts contain {num_images} <image> tokens (id {image_token_id}) but {len(image_grids)} images "
                "were given; put exactly one <image> token in the text for every image"
            )
        if image_sample_index is not None:
            expected = torch.repeat_interleave(torch.arange(len(images_per_prompt)), images_per_prompt.cpu())
            if not torch.equal(torch.as_tensor(image_sample_index).cpu().long(), expected):
                raise ValueError(
                    f"images per prompt from image_sample_index ({torch.as_tensor(image_sample_index).tolist()}) do "
                    f"not match the <image> tokens per prompt ({images_per_prompt.tolist()})"
                )
        thumbnail_only = (image_grids == 0).all(dim=1)  # (I,) grid (0, 0): no windows
        if not ((image_grids >= 1).all(dim=1) | thumbnail_only).all():
            raise ValueError(
                f"image_grids rows and cols must both be >= 1, or both 0 (thumbnail only), got {image_grids.tolist()}"
            )
        windows = image_grids[:, 0] * image_grids[:, 1]
        if (windows > self.config.max_windows).any():
            worst = int(windows.max())
            raise ValueError(
                f"an image has {worst} windows, over the configured maximum of {self.config.max_windows} "
                "(config.max_windows_train / max_windows_inference); plan tiles with a smaller budget"
            )
        num_crops = int(crops_per_image(image_grids).sum())
        if crops.shape[0] != num_crops:
            name = "pixel_values" if pixel_values is not None else "vision_tokens"
            raise ValueError(
                f"{name} holds {crops.shape[0]} crops but the image grids {image_grids.tolist()} need "
                f"{num_crops} (one thumbnail + rows*cols windows per image)"
            )

        tokens = self.vision_tower(pixel_values) if vision_tokens is None else vision_tokens  # (N, L, Dv)
        tokens = add_window_positions(tokens, image_grids)
        media, key_media_index = pack_media(tokens, image_grids, images_per_prompt)
        return CrossAttentionContext(
            media=media,
            key_media_index=key_media_index,
            media_seen=torch.zeros_like(images_per_prompt),
            kv_cache={} if cache_kv else None,
        )

    # -- forward --------------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        pixel_values: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
        image_sample_index: torch.Tensor | None = None,
        cross_attention_context: CrossAttentionContext | None = None,
        skip_logits: bool = False,
        loss_reduction: str = "mean",
        logprobs_of_last: int = 0,
        logprobs_temperature: float = 1.0,
        **kwargs,
    ) -> InfiMMHDCausalLMOutput:
        """Logits (B, T, V) and, given `labels` (B, T) with -100 on ignored tokens, the next-token loss.

        `input_ids` are needed whenever images are involved: the `<image>` tokens say which text attends to which
        image. Pass either `pixel_values` + `image_grids` (the first call) or the `cross_attention_context` a previous
        call returned (cached decoding).

        Training: `skip_logits=True` (with `labels`) returns the loss and no logits, and never materialises them:
        the LM head and the cross-entropy run in row chunks over the scored tokens only (`linear_cross_entropy`),
        which takes the (B, T, V) logits and their float32 copies (1.4 GB for 2k tokens of a 49k vocabulary) out of
        the step. `loss_reduction` is "mean" over the scored tokens (transformers' convention, also what `labels`
        alone gives) or "sum" (for a loop that normalises over a whole accumulation step).

        Scoring sampled tokens (RL): `logprobs_of_last=K` returns, instead of logits, `token_logprobs` (B, K) float32
        with gradient, the log-probs of the last K input tokens each under the prediction of the position before it
        (of softmax(logits / `logprobs_temperature`): the distribution that was sampled), and `token_entropy` (B, K)
        without gradient. Computed in row chunks from the hidden states (`linear_logprobs`), never holding the
        (B, K, V) logits; other heads (see `skip_logits`) go through the LLM's own, at those K positions only.
        """
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        if skip_logits and labels is None:
            raise ValueError("skip_logits=True computes the loss without logits: pass labels")
        if logprobs_of_last:
            if labels is not None or skip_logits:
                raise ValueError("logprobs_of_last scores the input's own last tokens: pass no labels, no skip_logits")
            if input_ids is None or not 0 < logprobs_of_last < input_ids.shape[1]:
                raise ValueError(f"logprobs_of_last={logprobs_of_last} needs input_ids longer than that")
        context = cross_attention_context
        if "past_key_values" in kwargs:  # transformers' older name
            cache = kwargs.pop("past_key_values")
        if pixel_values is not None:
            if context is not None:
                raise ValueError("pass either pixel_values or cross_attention_context, not both")
            if input_ids is None:
                raise ValueError("input_ids are required with pixel_values: the <image> tokens place the images")
            if image_grids is None:
                raise ValueError("image_grids (rows, cols per image) are required with pixel_values")
            caching = bool(use_cache if use_cache is not None else self.config.text_config.use_cache)
            context = self.encode_media(
                input_ids,
                pixel_values,
                image_grids,
                image_sample_index,
                cache_kv=caching and not torch.is_grad_enabled(),
            )
        elif context is None and input_ids is not None:
            num_images = int((input_ids == self.config.image_token_id).sum())
            if num_images:
                raise ValueError(f"the prompts contain {num_images} <image> tokens but no pixel_values were given")

        xattn = None
        if context is not None:
            if input_ids is None:
                raise ValueError("input_ids are required with images: the <image> tokens place the images")
            xattn = self._cross_attention_inputs(context, input_ids)

        text_inputs = dict(
            input_ids=None if inputs_embeds is not None else input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            cross_attention=xattn,
            **kwargs,
        )
        token_logprobs = token_entropy = None
        if logprobs_of_last:
            out, token_logprobs, token_entropy = self._token_logprobs(
                text_inputs, input_ids[:, -logprobs_of_last:], logprobs_temperature
            )
            loss = None
        elif skip_logits:
            out, loss = self._loss_without_logits(text_inputs, labels, loss_reduction)
        else:
            if labels is not None and loss_reduction == "sum":
                text_inputs["num_items_in_batch"] = 1  # transformers' loss: sum / num_items_in_batch
            out = self.language_model(**text_inputs, labels=labels, logits_to_keep=logits_to_keep)
            loss = out.loss
        if context is not None:
            new_media = (input_ids == self.config.image_token_id).sum(dim=-1)
            context = context.advanced(new_media, num_cached_layers=len(self.config.cross_attention_layers))
        return InfiMMHDCausalLMOutput(
            loss=loss,
            logits=None if skip_logits or logprobs_of_last else out.logits,
            cache=getattr(out, "cache", None),
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            cross_attention_context=context,
            token_logprobs=token_logprobs,
            token_entropy=token_entropy,
        )

    def _token_logprobs(
        self, text_inputs: dict[str, Any], tokens: torch.Tensor, temperature: float
    ) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """(the LLM's output, log-probs (B, K), entropies (B, K)) of the last K input `tokens` (`logprobs_of_last`)."""
        k = tokens.shape[1]
        head = self.language_model.get_output_embeddings()
        if self._head_is_plain_linear(head):
            out = self.language_model.get_decoder()(**text_inputs)
            hidden = out.last_hidden_state[:, -k - 1 : -1]  # (B, K, H): position t predicts token t + 1
            logp, entropy = linear_token_logprobs(
                hidden, head.weight, tokens.to(hidden.device), temperature=temperature
            )
            return out, logp, entropy
        out = self.language_model(**text_inputs, logits_to_keep=k + 1)
        logits = out.logits[:, :-1]  # (B, K, V): position t predicts token t + 1
        logp = logprobs_of(logits, tokens.to(logits.device), temperature)
        with torch.no_grad():
            entropy = entropy_from_logits(logits, temperature)
        return out, logp, entropy

    def _loss_without_logits(
        self, text_inputs: dict[str, Any], labels: torch.Tensor, loss_reduction: str
    ) -> tuple[Any, torch.Tensor]:
        """(the LLM's output with `last_hidden_state` or `logits` at scored positions, next-token loss) for
        `skip_logits`. Labels (B, T) sit under their own input position: position t's output predicts labels[t + 1]."""
        text_inputs = dict(text_inputs)
        num_items = text_inputs.pop("num_items_in_batch", None)  # transformers' Trainer passes it
        targets = labels[:, 1:]  # (B, T-1)
        head = self.language_model.get_output_embeddings()
        if self._head_is_plain_linear(head):
            out = self.language_model.get_decoder()(**text_inputs)
            hidden = out.last_hidden_state[:, :-1]  # (B, T-1, H): position t predicts token t+1
            loss_sum, num_scored = linear_cross_entropy(hidden, head.weight, targets.to(hidden.device))
        else:
            # Another head (soft-capped, scaled, biased): the LLM's own forward, logits at the scored positions only.
            keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)  # (K,) positions predicting a label
            out = self.language_model(**text_inputs, logits_to_keep=keep)
            logits = out.logits.float()  # (B, K, V)
            kept_targets = targets[:, keep.to(targets.device)].to(logits.device)  # (B, K)
            loss_sum = nn.functional.cross_entropy(
                logits.flatten(0, 1), kept_targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            num_scored = (kept_targets != IGNORE_INDEX).sum()
        if loss_reduction == "sum":
            return out, loss_sum
        return out, loss_sum / (num_items if num_items is not None else num_scored.clamp(min=1))

    def _head_is_plain_linear(self, head: nn.Module | None) -> bool:
        """Whether the LM's logits are `head(last_hidden_state)` with a bias-free `nn.Linear` whose weight is a full
        local tensor (not a sharded parameter outside its all-gather)."""
        if self.config.text_config.model_type not in PLAIN_HEAD_FAMILIES or not isinstance(head, nn.Linear):
            return False
        weight = head.weight
        local = type(weight) in (torch.Tensor, nn.Parameter)  # not a DTensor shard
        return head.bias is None and local and weight.shape == (head.out_features, head.in_features)

    def _cross_attention_inputs(self, context: CrossAttentionContext, input_ids: torch.Tensor) -> CrossAttentionInputs:
        """Masks for one call, built once and shared by every block."""
        times = text_time(input_ids, self.config.image_token_id, context.media_seen)  # (B, T)
        if self.config.cross_attention_implementation == "flash_attention_2":
            segments = varlen_segments(times, context.key_media_index, context.rows_per_context)
            mask, row_has_media = None, (times > 0)[..., None]
        else:
            segments = None
            mask, row_has_media = cross_attention_mask(
                times, context.key_media_index_per_row(), self.config.only_attend_immediate_media
            )
        ffn_rows = row_has_media
        if self.config.ffn_before_first_image:  # official per-sample flag: every token of a sample with an image
            ffn_rows = (context.key_media_index_per_row() > 0).any(dim=-1)[:, None, None]  # (B, 1, 1)
        # The common decode case (one image, every row past it) needs no mask and no row multiplies: skip the
        # masked kernel and the per-block multiplies (same values, fewer small ops per decoded token).
        return CrossAttentionInputs(
            context=context,
            mask=None if mask is None or bool(mask.all()) else mask,
            row_has_media=None if bool(row_has_media.all()) else row_has_media,
            ffn_rows=None if bool(ffn_rows.all()) else ffn_rows,
            segments=segments,
            varlen_kernel=flash_varlen_kernel() if segments is not None else None,
        )

    # -- generation -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
        image_sample_index: torch.Tensor | None = None,
        cross_attention_context: CrossAttentionContext | None = None,
        **kwargs,
    ):
        """`GenerationMixin.generate` with the vision tower run once per prompt, before any expansion.

        The cross-attention k/v of every block are computed at prefill and cached in the context for the decode
        steps; `num_return_sequences` / beams share the prompt's context row instead of re-encoding the image.
        """
        if pixel_values is not None:
            if input_ids is None:
                raise ValueError("input_ids are required with pixel_values: the <image> tokens place the images")
            if image_grids is None:
                raise ValueError("image_grids (rows, cols per image) are required with pixel_values")
            cross_attention_context = self.encode_media(
                input_ids, pixel_values, image_grids, image_sample_index, cache_kv=True
            )
        return super().generate(input_ids=input_ids, cross_attention_context=cross_attention_context, **kwargs)

    def _expand_inputs_for_generation(
        self, expand_size: int = 1, is_encoder_decoder: bool = False, input_ids=None, **model_kwargs
    ):
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size, is_encoder_decoder, input_ids, **model_kwargs
        )
        context = model_kwargs.get("cross_attention_context")
        if context is not None and expand_size > 1:
            model_kwargs["cross_attention_context"] = context.expanded(expand_size)
        return input_ids, model_kwargs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1):
        model_kwargs = super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=is_encoder_decoder, num_new_tokens=num_new_tokens
        )
        # With a text KV cache the next call sees only new tokens, so it continues from the advanced context; without
        # one, generate re-feeds the whole sequence and the media count must restart from the prompt's context.
        if (
            getattr(outputs, "cross_attention_context", None) is not None
            and getattr(outputs, "cache", None) is not None
        ):
            model_kwargs["cross_attention_context"] = outputs.cross_attention_context
        return model_kwargs
