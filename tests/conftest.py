"""Shared fixtures: tiny models, images of known window counts, and helpers that make the gates matter."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from transformers import AutoModelForCausalLM

import infimm_hd
from infimm_hd import base_sources, presets

# Sizes that plan to 1x1, 2x2 and 3x3 windows (+ thumbnail): 2, 5 and 10 crops.
WINDOWS_TO_SIZE = {1: (448, 448), 4: (896, 896), 9: (1344, 1344), 6: (1344, 896)}


@pytest.fixture(autouse=True)
def pil_default_truncated_flag():
    """Every test sees PIL's default `LOAD_TRUNCATED_IMAGES = False`.

    Importing lmms-eval (the metric parity tests) sets that process-wide flag to True, which would make truncated
    JPEGs decode and hide exactly the failures the data-preparation and image tests check for.
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    yield
    ImageFile.LOAD_TRUNCATED_IMAGES = False


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one process-wide state (its mixed precision cannot change once set), and stage scripts run
    in-process in many tests with different precisions: reset it after every test so no test inherits another's."""
    yield
    try:
        from accelerate.state import AcceleratorState, GradientState
    except ImportError:  # the train extra is not installed: nothing to reset
        return
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="session", autouse=True)
def smollm2_loaded_once():
    """Load the real SmolLM2-135M from its GGUF once per test process and hand every caller a deep copy.

    Why: each load parses the GGUF tokenizer (~5 s) and de-quantises 272 tensors (~14 s), and a dozen tests build
    the `smollm2-135m` preset or reload it as a trained-only checkpoint's base: ~3 of the suite's ~8.5 minutes.
    The first call runs the real loader, so the GGUF path stays tested (and `tests/test_real_llm.py` imports the
    original function); copies keep every test free to mutate its model and tokenizer (new special tokens).
    """
    original = presets.load_smollm2
    loaded: dict[torch.dtype, tuple] = {}

    def load_once(dtype: torch.dtype = torch.float32):
        if dtype not in loaded:
            loaded[dtype] = original(dtype)
        model, tokenizer = loaded[dtype]
        return copy.deepcopy(model), copy.deepcopy(tokenizer)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(presets, "load_smollm2", load_once)  # presets build from it
        patch.setattr(base_sources, "load_smollm2", load_once)  # trained-only reloading of a smollm2 base
        yield


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads made a training test 40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_image(windows: int, seed: int) -> Image.Image:
    """A random RGB image whose tiling plan has `windows` windows."""
    w, h = WINDOWS_TO_SIZE[windows]
    rng = np.random.default_rng(seed)
    # Blocky noise, so the resize keeps most of the content.
    small = rng.integers(0, 256, size=(h // 32, w // 32, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.NEAREST)


def randomize_gates(model, scale: float = 1.0, seed: int = 0) -> None:
    """Non-zero gates (and so a model whose output depends on the image)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.cross_attention_blocks().values():
            block.attn_gate.copy_(scale * torch.randn(block.attn_gate.shape, generator=g))
            block.ff_gate.copy_(scale * torch.randn(block.ff_gate.shape, generator=g))


def bare_llm_copy(model):
    """The LLM without any cross-attention, rebuilt from the model's own weights through a strict state-dict load."""
    state = {}
    for key, value in model.language_model.state_dict().items():
        if ".cross_attn." in key:
            continue
        state[key.replace(".decoder_layer.", ".")] = value
    bare = AutoModelForCausalLM.from_config(model.config.text_config)
    bare.load_state_dict(state, strict=True)
    return bare.eval()


@pytest.fixture
def tiny():
    model, processor = infimm_hd.build_model("tiny", seed=0)
    return model, processor


@pytest.fixture
def tiny_with_gates(tiny):
    model, processor = tiny
    randomize_gates(model)
    return model, processor


@pytest.fixture(scope="module")
def caption_shards(tmp_path_factory):
    """16 synthetic caption images (1x3 windows) as webdataset shards: what the 2-process stage-1 runs read."""
    from data_prep.synthetic import generate

    out = tmp_path_factory.mktemp("data")
    generate(out, num_images_train=16, num_images_heldout=1, tasks=("caption",), grids=((1, 3),), workers=1,
             log=lambda *a: None)  # fmt: skip
    return out
