"""A byte-level tokenizer built in code, for the `tiny` preset: no files, no downloads, any text round-trips.

It is a `transformers.PreTrainedTokenizerFast` over a `tokenizers` byte-level BPE with no merges, i.e. one token per
UTF-8 byte plus a few special tokens, so tests get a real HF tokenizer (padding, special tokens, decoding) in
milliseconds.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """256 byte tokens + `<pad>`, `<s>`, `</s>`; left padding (generation), BOS not added automatically."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable stand-ins for bytes
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        padding_side="left",
    )
