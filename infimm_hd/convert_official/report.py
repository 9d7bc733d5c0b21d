"""`ConversionReport`: what a conversion consumed, dropped and produced.

Its own module because every stage fills it: `key_mapping` records the aliases it folds, `state_dict_conversion`
the tensors it drops and converts, `end_to_end` the tokenizer files it copies, and `command_line` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ConversionReport:
    """What a conversion consumed, dropped and produced (printed by `main`)."""

    tensors: int = 0
    parameters: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)
    aliases_dropped: list[str] = field(default_factory=list)
    aliases_promoted: list[str] = field(default_factory=list)
    unused_dropped: list[str] = field(default_factory=list)
    tokenizer_files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One human-readable paragraph for the command line."""
        dtypes = ", ".join(f"{name}: {count}" for name, count in sorted(self.dtypes.items()))
        lines = [
            f"converted {self.tensors} tensors ({self.parameters:,} parameters; {dtypes})",
            f"dropped {len(self.aliases_dropped)} duplicate alias tensors (old_decoder_blocks / "
            f"gated_cross_attn_layers), identical to their canonical twins",
            f"dropped {len(self.unused_dropped)} unused tensors (vision final norm / head / blocks after the feature "
            "layer, rotary inv_freq)",
        ]
        if self.aliases_promoted:
            lines.append(f"used {len(self.aliases_promoted)} alias tensors whose canonical twin was absent")
        if self.tokenizer_files:
            lines.append(f"copied tokenizer files: {', '.join(self.tokenizer_files)}")
        return "\n".join(lines)
