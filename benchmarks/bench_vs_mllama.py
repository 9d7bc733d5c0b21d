"""Decode tokens/s of InfiMM-HD versus Hugging Face's Mllama (Llama 3.2 Vision) at matched size.

What: both designs put the image in cross-attention rather than in the LLM sequence, but Mllama inserts full
decoder layers (full-width attention over the vision tokens, plus a full SwiGLU MLP) while InfiMM-HD inserts light
gated blocks (12 x 64 heads at paper scale, FFN mult 1). Decoding therefore reads far fewer bytes per token in
InfiMM-HD. Target: our decode tokens/s >= 1.3x Mllama's.

Matched: text hidden size, FFN size, heads, vocabulary; the same self-attention decoder layers (Mllama's
`num_hidden_layers` counts its cross-attention layers too, so it gets layers + blocks, and `cross_attention_layers`
puts them where ours sit: before every 4th self-attention layer); the same number of cross-attention keys (Mllama:
10 tiles of 448 px at patch 14 = 10 x 1025 = 10,250 keys, the same as our 3x3 windows + thumbnail); the same prompt
length and number of generated tokens; dtype and threads. Mllama's vision encoder is made tiny (its cost is in the
untimed prefill); the text side is full size.

How: greedy `generate` with a KV cache and `min_new_tokens = max_new_tokens` for both, decode steps timed by a
logits-processor clock (prefill excluded), the two models interleaved over several repetitions after a warm-up,
median per-token times reported.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_vs_mllama.py [--quick] [--new-tokens N] [--reps R]
"""

from __future__ import annotations

import repo_path  # noqa: F401
import torch
from flags import decode_setup
from flop_counts import infimm_decode_bytes, infimm_decode_flops, llm_layer_flops, lm_head_flops
from model_builders import build_infimm, num_params
from model_scale import Scale, paper_scale
from timing import BackgroundLoad, interleaved, median, result_line, spread, timed_generate
from transformers import MllamaConfig, MllamaForConditionalGeneration

TARGET = 1.3
TILES = 10  # Mllama tiles = our crops (3x3 windows + thumbnail)
GRID = (2, 5)  # Mllama's canvas for 10 tiles (any 10-tile aspect ratio works)


def mllama_layout(scale: Scale) -> tuple[int, list[int]]:
    """(num_hidden_layers, cross_attention_layers) for Mllama so its self-attention layers match our LLM.

    Our blocks sit *before* self-attention layers every_n - 1, 2 * every_n - 1, ...; in Mllama's single layer list
    each inserted layer shifts the following ones by one.
    """
    ours = [i for i in range(scale.layers) if (i + 1) % scale.xattn_every == 0]
    return scale.layers + len(ours), [idx + k for k, idx in enumerate(ours)]


def build_mllama(scale: Scale, dtype: torch.dtype, seed: int = 0) -> MllamaForConditionalGeneration:
    """Mllama with our LLM's text shapes and a tiny vision encoder producing (448 / patch)^2 + 1 tokens per tile."""
    layers, cross = mllama_layout(scale)
    vision_width = 64
    intermediate_layers = [0]
    config = MllamaConfig(
        text_config=dict(
            vocab_size=scale.vocab,
            hidden_size=scale.hidden,
            intermediate_size=scale.intermediate,
            num_hidden_layers=layers,
            num_attention_heads=scale.heads,
            num_key_value_heads=scale.heads,  # MHA like our (Vicuna-shaped) LLM
            cross_attention_layers=cross,
            rms_norm_eps=1e-5,
            max_position_embeddings=4096,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=vision_width,
            attention_heads=1,
            intermediate_size=2 * vision_width,
            num_hidden_layers=1,
            num_global_layers=1,
            image_size=448,
            patch_size=scale.patch_size,
            max_num_tiles=TILES,
            supported_aspect_ratios=[[1, 1], [1, 2], [2, 1], list(GRID), list(reversed(GRID))],
            intermediate_layers_indices=intermediate_layers,
            vision_output_dim=vision_width * (1 + len(intermediate_layers)),
        ),
        image_token_index=scale.vocab,  # like Llama 3.2 Vision: the first id past the LM head's vocabulary
    )
    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(config)
    with torch.no_grad():  # open the gates (zero at init) so the vision keys change the text stream, as in ours
        for layer_idx in cross:
            layer = model.model.language_model.layers[layer_idx]
            layer.cross_attn_attn_gate.fill_(0.5)
            layer.cross_attn_mlp_gate.fill_(0.5)
    model.generation_config.pad_token_id = 0
    return model.to(dtype).eval()


def mllama_keys(model: MllamaForConditionalGeneration) -> int:
    """Cross-attention keys Mllama sees for one image of TILES tiles (its vision output length, class token incl.)."""
    return model.model.vision_model.num_patches * TILES


def mllama_token_flops(scale: Scale, context: int, keys: int) -> float:
    """One Mllama decode step: self-attention layers as ours, plus per cross layer: q/o projections, QK^T + AV over
    `keys` at full width, SwiGLU MLP; the LM head. (GQA would shrink the k/v bytes, not these FLOPs.)"""
    d, f = scale.hidden, scale.intermediate
    cross = 2 * 2 * d * d + 2 * 2 * keys * d + 2 * 3 * d * f
    layers = scale.layers * llm_layer_flops(scale, new=1, past=context)
    return layers + scale.num_xattn * cross + lm_head_flops(scale, 1)


def mllama_token_bytes(scale: Scale, context: int, keys: int, elt: int, kv_width: int | None = None) -> float:
    """Bytes one Mllama decode step reads: the weights it uses (not k/v_proj), the text KV cache, the vision k/v."""
    d, f = scale.hidden, scale.intermediate
    weights = scale.layers * (4 * d * d + 3 * d * f) + d * scale.vocab + scale.num_xattn * (2 * d * d + 3 * d * f)
    caches = scale.layers * 2 * context * d + scale.num_xattn * 2 * keys * (kv_width or d)
    return (weights + caches) * elt


def main() -> None:
    args, dtype, scale, new_tokens, reps = decode_setup(__doc__)

    ours, tokenizer = build_infimm(scale, dtype, args.seed)
    mllama = build_mllama(scale, dtype, args.seed)
    layers, cross = mllama_layout(scale)
    keys = 10 * scale.tokens_per_crop
    if mllama_keys(mllama) != keys:
        print(f"note: Mllama sees {mllama_keys(mllama)} keys, ours {keys}")
    print(
        f"Mllama text: {layers} layers ({scale.layers} self-attention + {len(cross)} cross-attention at {cross}), "
        f"cross-attention {scale.heads} heads x {scale.head_dim} over {mllama_keys(mllama)} keys; "
        f"vision: {TILES} tiles ({GRID[0]}x{GRID[1]} canvas), tiny encoder (width 64, 1+1 layers)"
    )
    print(f"ours: {scale.num_xattn} blocks at {ours.config.cross_attention_layers} over {keys} keys (3x3 + thumbnail)")

    ours_llm = num_params(ours.language_model) - sum(num_params(b) for b in ours.cross_attention_blocks().values())
    ours_fusion = sum(num_params(b) for b in ours.cross_attention_blocks().values())
    text = mllama.model.language_model
    m_cross = sum(num_params(text.layers[i]) for i in cross)
    print(
        f"params ours:   total {num_params(ours) / 1e6:.1f}M = LLM with embeddings and LM head {ours_llm / 1e6:.1f}M + "
        f"cross-attention blocks "
        f"{ours_fusion / 1e6:.1f}M + vision {num_params(ours.vision_tower) / 1e6:.1f}M"
    )
    vision = num_params(mllama.model.vision_model) + num_params(mllama.model.multi_modal_projector)
    print(
        f"params Mllama: total {num_params(mllama) / 1e6:.1f}M = text model with embeddings "
        f"{num_params(text) / 1e6:.1f}M (cross-attention layers {m_cross / 1e6:.1f}M of it) + LM head "
        f"{num_params(mllama.lm_head) / 1e6:.1f}M + vision and projector {vision / 1e6:.1f}M"
    )

    # The same prompt for both: BOS, the image token, then text; text before the image sees no image in either.
    prompt_text = tokenizer("Describe this image in detail, including every small object you can see.")["input_ids"]
    prompt_text = (prompt_text * args.prompt_tokens)[: args.prompt_tokens - 2]
    bos = tokenizer.bos_token_id
    ours_ids = torch.tensor([[bos, ours.config.image_token_id, *prompt_text]])
    mllama_ids = torch.tensor([[bos, mllama.config.image_token_index, *prompt_text]])
    attention_mask = torch.ones_like(ours_ids)
    prompt_len = ours_ids.shape[1]

    gen = torch.Generator().manual_seed(args.seed)
    ours_pixels = torch.randn(TILES, 3, 448, 448, generator=gen, dtype=dtype)
    mllama_pixels = ours_pixels.reshape(1, 1, TILES, 3, 448, 448)
    aspect_ratio_id = mllama.config.vision_config.supported_aspect_ratios.index(list(GRID)) + 1  # 0 = padding
    cross_mask = torch.zeros(1, prompt_len, 1, TILES, dtype=torch.long)  # (B, T, images, tiles)
    cross_mask[:, 1:] = 1  # from the image token on, every tile, as MllamaProcessor builds it

    def run_ours() -> float:
        return timed_generate(
            ours.generate,
            new_tokens,
            input_ids=ours_ids,
            attention_mask=attention_mask,
            pixel_values=ours_pixels,
            image_grids=torch.tensor([[3, 3]]),
        )

    def run_mllama() -> float:
        return timed_generate(
            mllama.generate,
            new_tokens,
            input_ids=mllama_ids,
            attention_mask=attention_mask,
            pixel_values=mllama_pixels,
            aspect_ratio_ids=torch.tensor([[aspect_ratio_id]]),
            aspect_ratio_mask=torch.ones(1, 1, TILES, dtype=torch.long),
            cross_attention_mask=cross_mask,
        )

    print(f"prompt {prompt_len} tokens, {new_tokens} new tokens per run, {reps} interleaved reps after 1 warm-up")
    with torch.inference_mode(), BackgroundLoad() as load:
        times = interleaved({"InfiMM-HD": run_ours, "Mllama": run_mllama}, reps=reps, warmup=1)
    print(load.line())

    context = prompt_len + new_tokens // 2
    elt = torch.finfo(dtype).bits // 8
    analytic = {
        "InfiMM-HD": (infimm_decode_flops(scale, context, keys), infimm_decode_bytes(scale, context, keys, elt)),
        "Mllama": (
            mllama_token_flops(scale, context, mllama_keys(mllama)),
            mllama_token_bytes(scale, context, mllama_keys(mllama), elt),
        ),
    }
    print(f"{'model':<10} {'ms/token':>9} {'(min..max)':>20} {'tokens/s':>9} {'GFLOP/token':>12} {'MB/token':>9}")
    for name, ts in times.items():
        flops, nbytes = analytic[name]
        print(
            f"{name:<10} {median(ts) * 1e3:>9.2f} {spread(ts):>20} {1 / median(ts):>9.2f} {flops / 1e9:>12.3f} "
            f"{nbytes / 1e6:>9.1f}"
        )
    speedup = median(times["Mllama"]) / median(times["InfiMM-HD"])
    flop_ratio = analytic["Mllama"][0] / analytic["InfiMM-HD"][0]
    byte_ratio = analytic["Mllama"][1] / analytic["InfiMM-HD"][1]
    print(f"tokens/s ours / Mllama: measured {speedup:.3f}, analytic FLOPs {flop_ratio:.3f}, bytes {byte_ratio:.3f}")
    paper, paper_keys = paper_scale(), 10 * 1025
    flops = mllama_token_flops(paper, context, paper_keys) / infimm_decode_flops(paper, context, paper_keys)
    ours_bytes = infimm_decode_bytes(paper, context, paper_keys, elt)
    mha = mllama_token_bytes(paper, context, paper_keys, elt) / ours_bytes
    gqa = mllama_token_bytes(paper, context, paper_keys, elt, kv_width=8 * 128) / ours_bytes
    print(
        f"analytic at paper scale (Vicuna-13B shapes, 10 cross layers, {paper_keys} keys): FLOPs {flops:.3f}, bytes "
        f"{mha:.3f} (MHA as here) / {gqa:.3f} (GQA with 8 kv heads, as Llama 3.2 Vision)"
    )
    print(result_line("decode_tokens_per_s_vs_mllama", f"{speedup:.3f}x", f">= {TARGET:.1f}x", speedup >= TARGET))


if __name__ == "__main__":
    main()
