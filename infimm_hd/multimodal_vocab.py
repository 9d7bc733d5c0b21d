"""Adding `<image>` / `<|endofchunk|>` to a base LLM: the tokens and the embedding rows for them.

The one place model assembly, trained-only reloading and Masked Thought's mask token go through, so a reloaded base
gets exactly the rows it was trained with.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .processing import add_multimodal_tokens


def grow_token_embeddings(llm: PreTrainedModel, vocab: int) -> None:
    """Grow the LLM's embeddings to `vocab` rows, new rows set to the mean of the old ones.

    Deterministic (unlike transformers' sampled `mean_resizing`), so a trained-only checkpoint rebuilds exactly the
    rows its base had, and in-distribution for the LLM.
    """
    old = llm.get_input_embeddings().weight.shape[0]
    if vocab <= old:
        return
    llm.resize_token_embeddings(vocab, mean_resizing=False)
    with torch.no_grad():
        for emb in (llm.get_input_embeddings(), llm.get_output_embeddings()):
            if emb is not None and emb.weight.shape[0] > old:
                emb.weight[old:] = emb.weight[:old].mean(dim=0)


def add_multimodal_vocab(llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """Add `<image>` / `<|endofchunk|>` to the tokenizer and rows for them to the LLM; returns their ids."""
    ids = add_multimodal_tokens(tokenizer)
    grow_token_embeddings(llm, len(tokenizer))
    return ids
