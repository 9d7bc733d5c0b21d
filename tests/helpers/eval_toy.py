"""`infimm-hd eval` on the toy benchmark, as a subprocess the resume and 2-process tests launch.

python tests/helpers/eval_toy.py [--kill-after-batches K] EVAL-ARGS...   (K: SIGKILL itself at batch K + 1)
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import tests.helpers.toy_benchmark  # noqa: E402,F401  (registers toy-vqa)
from infimm_hd.evaluation import command, runner  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--kill-after-batches"]:
        allowed, argv = int(argv[1]), argv[2:]
        real, calls = runner.generate_answers, [0]

        def generate_then_die(*args, **kwargs):
            if calls[0] == allowed:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: a real kill
            calls[0] += 1
            return real(*args, **kwargs)

        runner.generate_answers = generate_then_die
    sys.exit(command.main(argv))
