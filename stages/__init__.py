"""The paper's four training stages as scripts (`python -m stages.stage1_pretrain --help`), plus the demo.

Importing this package sets `OMP_WAIT_POLICY=PASSIVE` unless the environment already chooses: the loader's decoding
workers share the CPU cores with the training process, and with OpenMP's default active spin-waiting the trainer's
idle threads burn the cores the decoders need (a tiny-preset step measured 10x slower beside one busy process,
2x with PASSIVE). It only takes effect when torch is imported after it, as in `python -m stages.<script>`.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
