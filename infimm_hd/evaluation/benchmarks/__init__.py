"""One module per public benchmark (or family sharing a layout); importing this package registers them all.

Each module reads the benchmark's files exactly as its publisher distributes them (and, where lmms-eval's hub copy
has another layout, that one too), builds the prompt lmms-eval uses for it, and scores with `..metrics`.
"""

import importlib
import pkgutil

# Every module here registers its benchmarks on import; found by listing, so adding a file is adding a benchmark.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
