"""The benchmarks' model shapes: the paper's proportions at CPU size (`Scale`), and the paper's own (`paper_scale`).

Why one place: every comparison must set like against like (the same LLM shape, the same vision key count), and the
analytic ratios printed beside the measured ones must use the same shapes.

Scaling rule. The paper's model is Vicuna-13B (hidden 5120, 40 layers, FFN 13824, 40 heads x 128, vocab 32000)
with a gated cross-attention block before every 4th decoder layer (10 blocks of 12 heads x 64 = 768 inner dim, FFN
mult 1) over EVA02-CLIP-E tokens (width 1792, 1025 tokens per 448 px crop). `Scale` shrinks the widths by the same
factor and keeps the ratios that decide the cost split:

* hidden 1024 (= 5120 / 5), FFN 2752 (13824 / 5, rounded to 64), head dim 128 (8 heads), 16 layers;
* a block before every 4th layer (4 blocks); cross-attention inner dim 768 / 5 ~ 154, rounded up to 3 heads x 64;
* vision width 1792 / 5 ~ 358, rounded to 384; 1025 tokens per crop (patch 14 at 448) unless a benchmark says so;
* vocabulary 2560, chosen so the LM head is the same share of the decoder's matmul work as in Vicuna-13B (1.3 %).

`scale_from_args` applies the same rule to other --hidden/--layers.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

# Vicuna-13B + EVA02-CLIP-E + the paper's fusion blocks: the shapes `Scale` is proportional to.
PAPER = {
    "hidden": 5120,
    "layers": 40,
    "intermediate": 13824,
    "heads": 40,
    "vocab": 32000,
    "xattn_heads": 12,
    "xattn_head_dim": 64,
    "xattn_every": 4,
    "vision_width": 1792,
    "tokens_per_crop": 1025,
}


def proportional_vocab(hidden: int, layers: int, intermediate: int, multiple: int = 64) -> int:
    """Vocabulary that gives the LM head the same share of per-token matmul work as Vicuna-13B's (~1.3 %).

    Why: with a tiny byte vocabulary the LM head would vanish, with Vicuna's 32000 at hidden 1024 it would cost as
    much as 2.6 decoder layers; either would skew the ratios the benchmarks report.
    """
    p = PAPER
    share = p["vocab"] / (p["layers"] * (4 * p["hidden"] + 3 * p["intermediate"]))
    vocab = share * layers * (4 * hidden + 3 * intermediate)
    return max(multiple, int(round(vocab / multiple)) * multiple)


VIT_L14 = dict(vision_width=1024, vision_heads=16, vision_depth=24, patch_size=14)  # `Scale` fields of a ViT-L/14


@dataclass(frozen=True)
class Scale:
    """The CPU-sized model: paper proportions at hidden 1024 (see the module docstring for the rule)."""

    hidden: int = 1024
    layers: int = 16
    intermediate: int = 2752
    heads: int = 8
    vocab: int = 2560
    xattn_heads: int = 3
    xattn_head_dim: int = 64
    xattn_every: int = 4
    vision_width: int = 384
    vision_heads: int = 6
    vision_depth: int = 1
    patch_size: int = 14

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def xattn_inner(self) -> int:
        return self.xattn_heads * self.xattn_head_dim

    @property
    def num_xattn(self) -> int:
        return self.layers // self.xattn_every

    @property
    def tokens_per_crop(self) -> int:
        """Vision tokens per 448 px crop: the patch grid plus the class token (1025 at patch 14)."""
        return (448 // self.patch_size) ** 2 + 1

    def describe(self) -> str:
        return (
            f"LLM: Llama hidden {self.hidden}, {self.layers} layers, FFN {self.intermediate}, {self.heads} heads x "
            f"{self.head_dim}, vocab {self.vocab} | fusion: {self.num_xattn} gated cross-attention blocks "
            f"(before every {self.xattn_every}th layer), {self.xattn_heads} heads x {self.xattn_head_dim} = "
            f"{self.xattn_inner} inner (paper 768 at hidden 5120), FFN mult 1 | vision width {self.vision_width}, "
            f"{self.tokens_per_crop} tokens per 448 crop (patch {self.patch_size})"
        )


PATCH_FOR_TOKENS = {1025: 14, 257: 28, 65: 56}  # tokens per 448 crop (class token included) -> patch size


def paper_scale(tokens_per_crop: int = 1025) -> Scale:
    """The paper's own shapes as a `Scale`, for printing analytic ratios at full size beside the measured ones."""
    p = PAPER
    return Scale(
        hidden=p["hidden"],
        layers=p["layers"],
        intermediate=p["intermediate"],
        heads=p["heads"],
        vocab=p["vocab"],
        xattn_heads=p["xattn_heads"],
        xattn_head_dim=p["xattn_head_dim"],
        xattn_every=p["xattn_every"],
        vision_width=p["vision_width"],
        patch_size=PATCH_FOR_TOKENS[tokens_per_crop],
    )


def scale_from_args(args: argparse.Namespace, **overrides) -> Scale:
    """`Scale` from the command line: --hidden/--layers rescale every derived width by the paper's ratios."""
    hidden = args.hidden or 1024
    layers = args.layers or 16
    intermediate = max(64, int(round(hidden * PAPER["intermediate"] / PAPER["hidden"] / 64)) * 64)
    heads = max(1, hidden // 128)
    inner = hidden * PAPER["xattn_heads"] * PAPER["xattn_head_dim"] / PAPER["hidden"]
    xattn_heads = max(1, -(-int(inner) // 64))  # round up to whole 64-wide heads
    vision_width = max(64, int(round(hidden * PAPER["vision_width"] / PAPER["hidden"] / 64)) * 64)
    fields = dict(
        hidden=hidden,
        layers=layers,
        intermediate=intermediate,
        heads=heads,
        vocab=proportional_vocab(hidden, layers, intermediate),
        xattn_heads=xattn_heads,
        vision_width=vision_width,
        vision_heads=max(1, vision_width // 64),
    )
    fields.update(overrides)
    return Scale(**fields)
