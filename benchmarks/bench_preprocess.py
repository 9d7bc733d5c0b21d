"""Images/s of InfiMM-HD's image processor versus the LLaVA-NeXT and Mllama image processors of transformers.

What: the data-loader cost of turning an encoded photo into model-ready crops. Every processor gets the same JPEG
bytes and decodes them inside the timed region: ours takes the bytes directly (it reads the header first and may
decode a JPEG at reduced DCT scale when the tiles need less than half the resolution), the peers get
``Image.open(BytesIO(bytes))`` (lazy: their own pipeline decodes it), which is how they are normally fed.
Target: our images/s >= 2x the faster peer's.

Inputs: four real photos from ``skimage.data`` (astronaut, coffee, chelsea, rocket) resized to 640x480, 1024x768,
1920x1080 and 3000x2000 and encoded as JPEG (quality 90): 16 images, one processor call per image (as a data
loader's ``__getitem__`` does).

Processors (built locally, no downloads):

* ours: ``InfiMMHDImageProcessor()``: 448 px windows, up to 9 (+ thumbnail), CLIP normalisation.
* LLaVA-NeXT: ``LlavaNextImageProcessor`` with its default grid pinpoints and 336 px crops (the llava-v1.6
  checkpoints' size; the class default is 224) : up to 4 patches + a base image.
* Mllama: ``MllamaImageProcessor`` with ``max_image_tiles=4`` (its default) and 560 px tiles (Llama 3.2 Vision's;
  the class default is 224).

In transformers v5 these class names are the torchvision ("fast") backends, which is also what
``AutoImageProcessor`` builds by default when torchvision is installed; the PIL ("slow") backends
(``LlavaNextImageProcessorPil``, ``MllamaImageProcessorPil``) are timed too. The torchvision backends are timed with
two inputs: the lazily decoded PIL image (the common data-loader habit) and a uint8 tensor decoded by
``torchvision.io.decode_image`` inside the timed region (the input transformers' docs show for fast processors; the
same libjpeg-turbo decoder ours uses, and ~25% faster for them than going through PIL). The ratio is against the
fastest configuration of the fastest peer (``--no-pil`` drops the PIL backends, which are the slowest); the ratio
against PIL-image inputs only (what earlier versions of this script reported) is printed for information. A 12 MP
phone photo (4032x3024) is timed afterwards for information (not in the ratio): that is where JPEG DCT scaling
applies. Also for information: ours alone in fresh processes (what a data-loader worker is), with the recycled
output buffers (`infimm_hd.recycled_buffers`), with recycling off, and with plain `torch.empty`, since how warm
freshly allocated memory is depends on what else the process allocated: in the interleaved run the peers' large
frees keep glibc's heap warm for us.

How: one thread (``torch.set_num_threads(1)`` and OMP/MKL/OpenBLAS limited through the environment before any
import), a warm-up pass per processor, then ``--reps`` passes interleaved (A B C, C B A, ...); each pass times all
16 images; medians reported. The script reports and never exits non-zero on a missed target.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_preprocess.py [--quick] [--reps R] [--no-pil]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy / torch are imported

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import repo_path  # noqa: E402, F401
import skimage.data  # noqa: E402
import torch  # noqa: E402
from machine import cpu_model_name  # noqa: E402
from PIL import Image  # noqa: E402
from timing import BackgroundLoad, interleaved, median, result_line, spread  # noqa: E402
from torchvision.io import ImageReadMode, decode_image  # noqa: E402
from transformers import LlavaNextImageProcessor, MllamaImageProcessor  # noqa: E402

from infimm_hd.image_processing import InfiMMHDImageProcessor  # noqa: E402

TARGET = 2.0
SIZES = ((640, 480), (1024, 768), (1920, 1080), (3000, 2000))
PHONE = (4032, 3024)  # informational extra: a 12 MP phone photo
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
ALLOCATIONS = {  # how the "alone" child allocates pixel_values -> label
    "recycled": "recycled output buffers (default)",
    "fresh": "recycling off: a fresh mapping per output",
    "malloc": "torch.empty (before recycled_buffers)",
}


def make_inputs(sizes: tuple[tuple[int, int], ...] = SIZES) -> list[tuple[tuple[int, int], bytes]]:
    """(size, JPEG bytes) for every photo at every size: 16 fixed, realistic inputs by default."""
    out = []
    for name in PHOTOS:
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        for size in sizes:
            buffer = io.BytesIO()
            photo.resize(size, Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=90)
            out.append((size, buffer.getvalue()))
    return out


def decode_tensor(data: bytes) -> torch.Tensor:
    """JPEG bytes -> (3, H, W) uint8 tensor with torchvision's libjpeg-turbo decoder (the fast processors' input)."""
    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def build_peers(with_pil: bool) -> dict[str, Callable[[bytes], object]]:
    """Name -> function(bytes) -> model inputs, for the peers (each decodes the bytes itself, inside the timing).

    Names are ``"<peer> (<backend>[, <input>])"``; the ratio takes the fastest entry of each peer.
    """
    llava = LlavaNextImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    mllama = MllamaImageProcessor(size={"height": 560, "width": 560}, max_image_tiles=4)
    peers = {
        "llava-next (torchvision)": lambda data: llava(Image.open(io.BytesIO(data)), return_tensors="pt"),
        "llava-next (torchvision, tensor)": lambda data: llava(decode_tensor(data), return_tensors="pt"),
        "mllama (torchvision)": lambda data: mllama(Image.open(io.BytesIO(data)), return_tensors="pt"),
        "mllama (torchvision, tensor)": lambda data: mllama(decode_tensor(data), return_tensors="pt"),
    }
    if with_pil:
        from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
        from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

        llava_pil = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
        mllama_pil = MllamaImageProcessorPil(size={"height": 560, "width": 560}, max_image_tiles=4)
        peers["llava-next (PIL)"] = lambda data: llava_pil(Image.open(io.BytesIO(data)), return_tensors="pt")
        peers["mllama (PIL)"] = lambda data: mllama_pil(Image.open(io.BytesIO(data)), return_tensors="pt")
    return peers


def output_floats(result: object) -> int:
    """Number of float values in a processor output's pixel_values (the work each one produces)."""
    return int(np.prod(tuple(result["pixel_values"].shape)))


def alone_child(reps: int, allocation: str) -> None:
    """Subprocess: only our processor, one warm-up pass then `reps` passes; prints JSON (median ms, faults/image).

    ``allocation``: "recycled" (the default), "fresh" (recycling off: a new mapping per output) or "malloc" (plain
    ``torch.empty``, what the processor used for outputs under 32 MB before `recycled_buffers`).
    """
    from infimm_hd import recycled_buffers

    if allocation == "fresh":
        recycled_buffers.OUTPUT_BUFFERS.max_bytes = 0
    elif allocation == "malloc":
        recycled_buffers.OUTPUT_BUFFERS.empty_float32 = lambda shape: torch.empty(shape, dtype=torch.float32)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    inputs, ours = make_inputs(), InfiMMHDImageProcessor()
    passes, faults = [], 0
    for rep in range(reps + 1):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _, data in inputs:
            ours(data)
        if rep:  # the first pass is the warm-up
            passes.append(time.perf_counter() - start)
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"ms": median(passes) * 1e3, "faults": faults / (reps * len(inputs))}))


def alone(allocation: str, reps: int) -> dict[str, float]:
    """Run `alone_child` in a fresh process with the given output allocation."""
    command = [sys.executable, __file__, "--alone-child", allocation, "--reps", str(reps)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    """Time every processor over the inputs, print images/s and the ratio, end with the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15, help="timed passes per processor (default 15)")
    parser.add_argument("--quick", action="store_true", help="5 passes")
    parser.add_argument("--no-pil", action="store_true", help="skip the informational PIL-backend peers")
    parser.add_argument("--alone-child", choices=ALLOCATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    reps = 5 if args.quick else args.reps
    if args.alone_child:
        alone_child(reps, args.alone_child)
        return
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torchvision 0.29's note on its decoders

    inputs = make_inputs()
    ours = InfiMMHDImageProcessor()
    processors: dict[str, Callable[[bytes], object]] = {"infimm-hd (ours)": lambda data: ours(data)}
    processors.update(build_peers(with_pil=not args.no_pil))

    per_size: dict[str, dict[tuple[int, int], list[float]]] = {name: {s: [] for s in SIZES} for name in processors}

    def one_pass(name: str) -> float:
        """Process all inputs once with `name`; returns the total seconds and records per-image times."""
        fn, total = processors[name], 0.0
        for size, data in inputs:
            start = time.perf_counter()
            fn(data)
            elapsed = time.perf_counter() - start
            per_size[name][size].append(elapsed)
            total += elapsed
        return total

    print(f"machine: {cpu_model_name()}, torch {torch.__version__}, 1 thread")
    print(f"inputs: {len(inputs)} JPEGs ({', '.join(PHOTOS)} at {', '.join(f'{w}x{h}' for w, h in SIZES)})")
    for name, fn in processors.items():
        floats = sum(output_floats(fn(data)) for _, data in inputs[: len(SIZES)])
        print(f"  {name:32s} pixel_values for one photo at the 4 sizes: {floats / 1e6:5.1f} M floats")

    with BackgroundLoad() as load:
        times = interleaved({name: (lambda n=name: one_pass(n)) for name in processors}, reps=reps, warmup=1)
    for sizes in per_size.values():  # drop the warm-up pass from the per-size figures
        for size in sizes:
            sizes[size] = sizes[size][len(PHOTOS) :]

    print(f"\n{reps} interleaved passes of {len(inputs)} images, median:")
    header = "  ".join(f"{w}x{h:<5d}" for w, h in SIZES)
    print(f"  {'processor':32s} {'images/s':>9s}   per-image ms at {header}   pass spread")
    rates = {}
    for name in processors:
        rates[name] = len(inputs) / median(times[name])
        cells = "  ".join(f"{median(per_size[name][s]) * 1e3:9.1f}" for s in SIZES)
        print(f"  {name:32s} {rates[name]:9.1f}   {'':16s}{cells}   {spread(times[name])}")
    print(load.line())

    # Informational, not part of the ratio: a phone camera's 12 MP photo, where JPEG DCT scaling applies.
    phone = [(PHONE, data) for (size, data) in make_inputs(sizes=(PHONE,))]
    phone_ms = {}
    for name, fn in processors.items():
        fn(phone[0][1])
        samples = []
        for _ in range(max(3, reps // 3)):
            for _, data in phone:
                start = time.perf_counter()
                fn(data)
                samples.append(time.perf_counter() - start)
        phone_ms[name] = median(samples) * 1e3
    print(f"\ninformation only: {PHONE[0]}x{PHONE[1]} (12 MP phone photo), per-image ms, median:")
    for name, ms in phone_ms.items():
        print(f"  {name:32s} {ms:9.1f}")

    # Informational: ours alone in fresh processes, per output allocation, interleaved (A B C, C B A).
    runs: dict[str, list[dict[str, float]]] = {a: [] for a in ALLOCATIONS}
    for allocation in (*ALLOCATIONS, *reversed(ALLOCATIONS)):
        runs[allocation].append(alone(allocation, reps))
    print(f"\ninformation only: ours alone in a fresh process (a data-loader worker), {len(inputs)} images a pass:")
    for allocation, label in ALLOCATIONS.items():
        ms = median([r["ms"] for r in runs[allocation]])
        faults = median([r["faults"] for r in runs[allocation]])
        print(f"  {label:40s} {ms:7.1f} ms  ({len(inputs) / ms * 1e3:5.1f} images/s, {faults:5.0f} page faults/image)")

    ours = rates["infimm-hd (ours)"]
    peers = [n for n in processors if n != "infimm-hd (ours)"]
    best = max(peers, key=rates.__getitem__)  # the fastest configuration of the fastest peer
    pil_inputs = [n for n in peers if "tensor" not in n]
    best_pil = max(pil_inputs, key=rates.__getitem__)
    print(
        f"\nfor information, vs PIL-image inputs only: {best_pil} ({rates[best_pil]:.1f} images/s): "
        f"{ours / rates[best_pil]:.2f}x"
    )
    print(f"fastest peer configuration: {best} ({rates[best]:.1f} images/s); ours {ours:.1f} images/s")
    ratio = ours / rates[best]
    print(result_line("preprocess_images_per_s_vs_best_peer", f"{ratio:.2f}x", f">= {TARGET:g}x", ratio >= TARGET))


if __name__ == "__main__":
    main()
