"""OpenAI-compatible HTTP serving of an InfiMM-HD model (`infimm-hd serve`).

`create_app(model, processor, ...)` builds the FastAPI app; `serving.cli.main` loads a model and runs it under
uvicorn. Needs the `serve` extra (fastapi, uvicorn).
"""

from .app import create_app
from .batcher import BatchConfig
from .limits import ServerLimits

__all__ = ["BatchConfig", "ServerLimits", "create_app"]
