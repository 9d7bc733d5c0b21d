"""Convert the official InfiMM-HD checkpoint (`Infi-MM/infimm-hd`) into this package's safetensors format.

The whole converter still lives in `config_translation` (moved here unchanged from `infimm_hd/convert_official.py`);
this package re-exports its names so `from infimm_hd import convert_official` keeps working.

Command line: `python -m infimm_hd.convert_official SRC DST` (see `main`).
"""

from .config_translation import (
    ConversionReport,
    convert,
    convert_state_dict,
    infer_config,
    load_official_checkpoint,
    main,
    official_config,
)

__all__ = [
    "ConversionReport",
    "convert",
    "convert_state_dict",
    "infer_config",
    "load_official_checkpoint",
    "main",
    "official_config",
]
