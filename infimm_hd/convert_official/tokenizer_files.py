"""The tokenizer files of an official folder: copied as they are (minus `auto_map`), after checking the special ids.

`<|endofchunk|>` and `<image>` must map to the ids the model was trained with (`config.end_of_chunk_token_id`,
`config.image_token_id`) in every tokenizer file that declares them, else the converted model would be fed the
wrong tokens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..configuration import InfiMMHDConfig

IMAGE_TOKEN = "<image>"
END_OF_CHUNK_TOKEN = "<|endofchunk|>"

# Files of a hub folder that belong to the tokenizer (copied as they are, `auto_map` removed from the config).
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


# -- tokenizer -------------------------------------------------------------------------------------------------------
def _tokenizer_ids(folder: Path) -> dict[str, set[int]]:
    """token -> ids declared for the special tokens by the tokenizer JSON files of `folder`."""
    found: dict[str, set[int]] = {}

    def note(token: str, index: int) -> None:
        found.setdefault(token, set()).add(int(index))

    if (path := folder / "added_tokens.json").is_file():
        for token, index in json.loads(path.read_text()).items():
            note(token, index)
    if (path := folder / "tokenizer_config.json").is_file():
        for index, entry in (json.loads(path.read_text()).get("added_tokens_decoder") or {}).items():
            note(entry["content"], int(index))
    if (path := folder / "tokenizer.json").is_file():
        data = json.loads(path.read_text())
        for entry in data.get("added_tokens") or []:
            note(entry["content"], entry["id"])
        vocab = (data.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):
            for token in (IMAGE_TOKEN, END_OF_CHUNK_TOKEN):
                if token in vocab:
                    note(token, vocab[token])
    return found


def _check_tokenizer(folder: Path, config: InfiMMHDConfig) -> None:
    """The tokenizer in `folder` must map `<|endofchunk|>` and `<image>` to the ids the model was trained with."""
    found = _tokenizer_ids(folder)
    for token, expected in ((END_OF_CHUNK_TOKEN, config.end_of_chunk_token_id), (IMAGE_TOKEN, config.image_token_id)):
        ids = found.get(token)
        if not ids:
            raise ValueError(f"the tokenizer files in {folder} do not define {token!r} (id {expected} expected)")
        if ids != {expected}:
            raise ValueError(f"the tokenizer maps {token!r} to {sorted(ids)} but the model uses id {expected}")


def _copy_tokenizer(src: Path, dst: Path, config: InfiMMHDConfig) -> list[str]:
    """Copy the tokenizer files (without the remote-code `auto_map`) and check the two special token ids."""
    names = [name for name in TOKENIZER_FILES if (src / name).is_file()]
    if not names:
        return []
    _check_tokenizer(src, config)
    for name in names:
        if name == "tokenizer_config.json":
            data = json.loads((src / name).read_text())
            data.pop("auto_map", None)  # points at the official repo's Python files, which are not converted
            (dst / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        else:
            shutil.copyfile(src / name, dst / name)
    return names
