"""The streaming loader: batches equal the processor's own output, order is seeded, ranks and workers split the data
exactly, resumes are exact and decode nothing they skip, bad samples are dropped and counted, bucketing pays.

Shards are written here with webdataset's TarWriter following `training.sample_format`.
"""

from __future__ import annotations

import io
import json
import math
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
import torch
import webdataset as wds
from PIL import Image

import infimm_hd
from infimm_hd.image_processing import InfiMMHDImageProcessor
from infimm_hd.training.buckets import padding_waste
from infimm_hd.training.data import LoaderConfig, StreamingLoader, iterate_records

IMAGE_KEYS = ("pixel_values", "image_grids", "image_sample_index")
TENSOR_KEYS = ("input_ids", "attention_mask", "labels", *IMAGE_KEYS)


# -- fixtures: images, records, shards ---------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _noise(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def images() -> dict[str, tuple[str, bytes]]:
    """Encoded test images by name: (file extension, bytes)."""
    return {
        "tall": ("png", _encode(_noise(448, 896, 0), "PNG")),
        "big": ("png", _encode(_noise(900, 1300, 1), "PNG")),
        "astronaut": ("png", _encode(Image.fromarray(skimage.data.astronaut()), "PNG")),
        "coffee": ("jpg", _encode(Image.fromarray(skimage.data.coffee()), "JPEG")),
        "chelsea": ("jpg", _encode(Image.fromarray(skimage.data.chelsea()), "JPEG")),
        "corrupt": ("png", np.random.default_rng(2).integers(0, 256, 4000, dtype=np.uint8).tobytes()),
        "truncated": ("png", _encode(_noise(300, 200, 3), "PNG")[:3000]),
    }


def _record(key: str, image_names: list[str], question: str, answers: list[str], task: str = "vqa") -> dict:
    """A contract record: the images go into the first user turn; one user/assistant round per answer."""
    messages = []
    for i, answer in enumerate(answers):
        parts = [{"type": "image"} for _ in image_names] if i == 0 else []
        messages.append({"role": "user", "content": [*parts, {"type": "text", "text": f"{question} ({i})"}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return {"id": key, "task": task, "messages": messages, "answer": answers[-1], "rejected": None, "meta": {}}


def _write(folder: Path, samples: list[tuple[dict, list[str]]], images: dict, num_shards: int) -> list[dict]:
    """Write (record, image names) samples in contiguous runs into `num_shards` tars; returns the records."""
    folder.mkdir(parents=True, exist_ok=True)
    per_shard = math.ceil(len(samples) / num_shards)
    for s in range(num_shards):
        with wds.TarWriter(str(folder / f"shard-{s:03d}.tar")) as writer:
            for record, names in samples[s * per_shard : (s + 1) * per_shard]:
                entry: dict[str, Any] = {"__key__": record["id"], "json": json.dumps(record).encode()}
                for i, name in enumerate(names):
                    ext, data = images[name]
                    entry[f"{i}.{ext}"] = data
                writer.write(entry)
    return [record for record, _ in samples]


MIXED_IMAGES = [["tall"], [], ["astronaut"], ["coffee", "tall"], ["chelsea"], [], ["big"], ["tall"]]


def _mixed_samples(
    n: int, bad: dict[int, list[str]] | None = None, image_sets: list[list[str]] = MIXED_IMAGES
) -> list[tuple[dict, list[str]]]:
    """n records cycling through `image_sets` with text of varied length; `bad` replaces some image sets."""
    samples = []
    for i in range(n):
        names = (bad or {}).get(i, image_sets[i % len(image_sets)])
        answers = [f"answer {i} " + "x" * (7 * i % 40)] + (["second answer"] if i % 5 == 0 else [])
        samples.append((_record(f"r{i:03d}", names, "What is shown here?" + " please" * (i % 4), answers), names))
    return samples


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, images) -> tuple[str, list[dict]]:
    """24 clean records in 4 shards: (shard pattern, records in file order)."""
    folder = tmp_path_factory.mktemp("mixed")
    records = _write(folder, _mixed_samples(24), images, num_shards=4)
    return str(folder / "shard-{000..003}.tar"), records


@pytest.fixture(scope="module")
def small_with_bad(tmp_path_factory, images) -> tuple[str, list[dict]]:
    """10 records in 2 shards, 2 of them with a corrupt image: for resumes across epochs and empty batches."""
    folder = tmp_path_factory.mktemp("small")
    records = _write(folder, _mixed_samples(10, bad={3: ["corrupt"], 8: ["truncated"]}), images, num_shards=2)
    return str(folder / "*.tar"), records


@pytest.fixture(scope="module")
def tiny_processor():
    return infimm_hd.build_model("tiny", seed=0)[1]


def _config(shards: str, **overrides: Any) -> LoaderConfig:
    settings: dict[str, Any] = dict(
        shards=[shards], batch_size=2, max_windows=4, shuffle_buffer=8, bucket_pool=8, num_workers=0, seed=0
    )
    settings.update(overrides)
    return LoaderConfig(**settings)


def _take(loader: StreamingLoader, n: int) -> list[dict[str, Any]]:
    return list(islice(iter(loader), n))


def _assert_same_batches(got: list[dict], want: list[dict], what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} batches vs {len(want)}"
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a["keys"] == b["keys"], f"{what}: batch {i} holds {a['keys']}, expected {b['keys']}"
        assert a.keys() == b.keys(), f"{what}: batch {i} fields differ"
        for key in TENSOR_KEYS:
            if key in a:
                assert torch.equal(a[key], b[key]), f"{what}: batch {i} {key} differs"
        for key in ("num_tokens", "num_samples", "stats", "epoch"):
            assert a[key] == b[key], f"{what}: batch {i} {key}: {a[key]} vs {b[key]}"


# -- contents -----------------------------------------------------------------------------------------------------


def test_batches_equal_the_processor_output_right_padded(mixed, tiny_processor, images):
    """Independent expectation: the processor on the same conversations as one left-padded batch, unpadded row by
    row, equals the loader's right-padded rows; pixels, grids and image indices are identical."""
    shards, records = mixed
    by_key = {r["id"]: r for r in records}
    names = dict((record["id"], imgs) for record, imgs in _mixed_samples(24))
    loader = StreamingLoader(_config(shards, batch_size=4, shuffle_buffer=0, bucket_pool=0), tiny_processor)
    batches = _take(loader, 6)
    assert [k for b in batches for k in b["keys"]] == [r["id"] for r in records], "shuffle off must keep file order"
    for batch in batches:  # the reference answers ride along (RLHF rewards read them)
        assert batch["answers"] == [by_key[k].get("answer") for k in batch["keys"]]
    pad_id = tiny_processor.tokenizer.pad_token_id
    for batch in batches:
        convs = [by_key[k]["messages"] for k in batch["keys"]]
        want = tiny_processor.apply_chat_template(
            convs,
            tokenize=True,
            return_dict=True,
            return_labels=True,
            images=[[images[n][1] for n in names[k]] for k in batch["keys"]],
            processor_kwargs={"max_windows": 4},
        )
        lengths = batch["attention_mask"].sum(1)
        for b in range(len(convs)):
            n = int(lengths[b])
            right = torch.arange(batch["input_ids"].shape[1]) < n
            assert torch.equal(batch["attention_mask"][b].bool(), right), "attention mask must be right-padded"
            assert (batch["input_ids"][b, n:] == pad_id).all() and (batch["labels"][b, n:] == -100).all()
            keep = want["attention_mask"][b].bool()
            assert torch.equal(batch["input_ids"][b, :n], want["input_ids"][b][keep]), f"input_ids row {b}"
            assert torch.equal(batch["labels"][b, :n], want["labels"][b][keep]), f"labels row {b}"
        for key in IMAGE_KEYS:
            assert (key in batch) == (key in want), f"{key} present in one and not the other"
            if key in want:
                assert torch.equal(batch[key], want[key]), f"{key} differs from the processor's"
        assert batch["input_ids"].dtype == batch["labels"].dtype == torch.long
        assert batch["num_samples"] == len(convs)
        assert batch["num_tokens"] == int((batch["labels"][:, 1:] != -100).sum())


def test_labels_cover_exactly_the_assistant_turns(mixed, tiny_processor):
    shards, records = mixed
    by_key = {r["id"]: r for r in records}
    tok = tiny_processor.tokenizer
    for batch in _take(StreamingLoader(_config(shards, batch_size=4), tiny_processor), 3):
        for b, key in enumerate(batch["keys"]):
            labels = batch["labels"][b]
            scored = labels != -100
            assert torch.equal(labels[scored], batch["input_ids"][b][scored]), "labels must copy the input ids"
            answers = [m["content"][0]["text"] for m in by_key[key]["messages"] if m["role"] == "assistant"]
            want = "".join(f" {a}<|endofchunk|>" for a in answers)  # the Vicuna template's assistant turns
            assert tok.decode(labels[scored], skip_special_tokens=False) == want, f"labels of {key}"


def test_thumbnail_only_mode(mixed, tiny_processor):
    """max_windows=0: every image is one thumbnail crop with grid (0, 0)."""
    shards, _ = mixed
    batch = next(
        b for b in _take(StreamingLoader(_config(shards, max_windows=0), tiny_processor), 4) if "image_grids" in b
    )
    assert (batch["image_grids"] == 0).all(), "thumbnail-only images have grid (0, 0)"
    assert batch["pixel_values"].shape[0] == batch["image_grids"].shape[0], "one crop per image"


# -- order and sharding --------------------------------------------------------------------------------------------


def test_seed_decides_the_order(mixed, tiny_processor):
    shards, _ = mixed
    first = _take(StreamingLoader(_config(shards), tiny_processor), 6)
    again = _take(StreamingLoader(_config(shards), tiny_processor), 6)
    _assert_same_batches(again, first, "same seed")
    other = _take(StreamingLoader(_config(shards, seed=1), tiny_processor), 6)
    assert [b["keys"] for b in other] != [b["keys"] for b in first], "another seed must give another order"


@pytest.mark.parametrize("num_shards", [4, 2], ids=["split-by-shard", "split-by-sample"])
def test_ranks_and_workers_read_each_record_once_per_epoch(tmp_path, images, tiny_processor, num_shards):
    """2 ranks x 2 workers = 4 readers: with 4 shards each reads one shard, with 2 each keeps every 4th sample."""
    records = _write(tmp_path, _mixed_samples(16), images, num_shards=num_shards)
    seen: list[str] = []
    for rank in range(2):
        loader = StreamingLoader(
            _config(str(tmp_path / "*.tar"), num_workers=2, max_windows=1), tiny_processor, rank=rank, world_size=2
        )
        # Each reader has 4 samples = 2 batches per epoch; 8 batches per rank run well into epoch 1 on both workers.
        seen += [k for b in _take(loader, 8) if b["epoch"] == 0 for k in b["keys"]]
    assert sorted(seen) == sorted(r["id"] for r in records), "epoch 0 over all readers must hold every record once"


# -- resume --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_workers", "batch_size", "k"), [(0, 2, 7), (2, 2, 7), (0, 1, 4)], ids=["0-workers", "2-workers", "batch-1"]
)
def test_resume_yields_the_uninterrupted_batches(small_with_bad, tiny_processor, num_workers, batch_size, k):
    """k batches, save, restore into a new loader: the next batches (and stats) equal the uninterrupted ones. k=7
    crosses an epoch; with batch size 1 the corrupt samples leave empty batches that must keep their numbers."""
    shards, _ = small_with_bad
    cfg = _config(shards, num_workers=num_workers, batch_size=batch_size, max_windows=1)
    loader = StreamingLoader(cfg, tiny_processor)
    stream = iter(loader)
    list(islice(stream, k))
    state = json.loads(json.dumps(loader.state_dict()))
    after = list(islice(stream, 6))
    workers = max(num_workers, 1)
    delivered = [w["delivered"] for w in state["workers"]]
    assert delivered == [math.ceil((k - w) / workers) for w in range(workers)], "DataLoader is not round-robin"

    resumed = StreamingLoader(cfg, tiny_processor)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    _assert_same_batches(_take(resumed, 6), after, f"resume after {k} batches")
    if batch_size == 1:
        assert after[-1]["stats"]["empty_batches"] >= 1, "the fixture should have produced an empty batch"


def test_resume_decodes_no_skipped_image(mixed, tiny_processor, monkeypatch):
    shards, _ = mixed
    decoded: list[int] = []
    original = InfiMMHDImageProcessor.process

    def counting(self, images, max_windows=None):
        decoded.append(len(images))
        return original(self, images, max_windows=max_windows)

    monkeypatch.setattr(InfiMMHDImageProcessor, "process", counting)
    loader = StreamingLoader(_config(shards, batch_size=4), tiny_processor)
    stream = iter(loader)
    first = list(islice(stream, 4))
    state = loader.state_dict()
    assert sum(decoded) == sum(len(b.get("image_grids", [])) for b in first) > 0, "the counter must see decodes"

    decoded.clear()
    resumed = StreamingLoader(_config(shards, batch_size=4), tiny_processor)
    resumed.load_state_dict(state)
    (batch,) = _take(resumed, 1)
    assert sum(decoded) == len(batch.get("image_grids", [])), "a resume decoded images of skipped batches"


def test_mismatched_restore_is_refused(mixed, tiny_processor):
    shards, _ = mixed
    state = StreamingLoader(_config(shards, num_workers=2), tiny_processor).state_dict()
    with pytest.raises(ValueError, match="num_workers=2 but this loader has num_workers=0"):
        StreamingLoader(_config(shards, num_workers=0), tiny_processor).load_state_dict(state)
    with pytest.raises(ValueError, match="world_size=1 but this loader has world_size=2"):
        StreamingLoader(_config(shards, num_workers=2), tiny_processor, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="seed=0"):
        StreamingLoader(_config(shards, num_workers=2, seed=3), tiny_processor).load_state_dict(state)


# -- drops and bucketing -------------------------------------------------------------------------------------------


def test_bad_samples_are_dropped_and_counted_across_workers(tmp_path, images, tiny_processor):
    """20 image samples, 2 with corrupt image bytes (10%), plus a broken JSON record: counts exact, no crash."""
    with_images = [names for names in MIXED_IMAGES if names]
    samples = _mixed_samples(20, bad={4: ["corrupt"], 13: ["truncated"]}, image_sets=with_images)
    records = _write(tmp_path, samples, images, num_shards=2)
    with wds.TarWriter(str(tmp_path / "shard-002.tar")) as writer:
        writer.write({"__key__": "broken", "json": b"{not json"})
    loader = StreamingLoader(
        _config(str(tmp_path / "*.tar"), num_workers=2, batch_size=4, shuffle_buffer=0), tiny_processor
    )
    batches = _take(loader, 12)
    keys = [k for b in batches if b["epoch"] == 0 for k in b["keys"]]
    assert sorted(keys) == sorted(r["id"] for r in records if r["id"] not in ("r004", "r013"))
    last_epoch0 = [b for b in batches if b["epoch"] == 0][-1]["stats"]
    assert last_epoch0["bad_image"] == 2, f"2 corrupt images expected in the counts, got {last_epoch0}"
    assert last_epoch0["bad_record"] == 1 and last_epoch0["samples"] == 18, last_epoch0


def test_too_long_samples_and_other_tasks_are_dropped_and_counted(tmp_path, images, tiny_processor):
    samples = [(_record(f"t{i:02d}", [], "Q" * 20, ["A" * (10 + 40 * i)]), []) for i in range(8)]
    samples.append((_record("cap", [], "Describe.", ["A caption."], task="caption"), []))
    _write(tmp_path, samples, images, num_shards=1)
    max_length = 300  # the Vicuna system prompt alone is ~190 byte tokens: t00..t02 fit, t03..t07 do not
    cfg = _config(str(tmp_path / "*.tar"), max_length=max_length, tasks=["vqa"], batch_size=3, shuffle_buffer=0)
    batches = _take(StreamingLoader(cfg, tiny_processor), 2)
    assert [k for b in batches for k in b["keys"]] == ["t00", "t01", "t02", "t00", "t01", "t02"]
    assert all(b["input_ids"].shape[1] <= max_length for b in batches)
    stats = batches[0]["stats"]
    assert (stats["too_long"], stats["filtered_task"], stats["samples_read"]) == (5, 1, 9), stats


def test_bucketing_reduces_padding(tmp_path, images, tiny_processor):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 800, size=64)
    samples = [(_record(f"b{i:02d}", [], "Q", ["A" * int(n)]), []) for i, n in enumerate(lengths)]
    _write(tmp_path, samples, images, num_shards=1)

    def waste(bucket_pool: int) -> float:
        cfg = _config(str(tmp_path / "*.tar"), batch_size=4, shuffle_buffer=64, bucket_pool=bucket_pool)
        batches = _take(StreamingLoader(cfg, tiny_processor), 16)  # one epoch
        assert sorted(k for b in batches for k in b["keys"]) == sorted(r["id"] for r, _ in samples)
        return padding_waste([b["attention_mask"].sum(1).tolist() for b in batches])

    plain, bucketed = waste(0), waste(64)
    assert bucketed < 0.25 * plain, f"padding waste {bucketed:.3f} with bucketing vs {plain:.3f} without"


# -- evaluation helper ---------------------------------------------------------------------------------------------


def test_iterate_records_in_file_order(mixed):
    shards, records = mixed
    got = list(iterate_records([shards]))
    assert [r.record for r in got] == records
    names = dict((record["id"], imgs) for record, imgs in _mixed_samples(24))
    for item in got:
        assert len(item.images) == len(names[item.key]) and all(im.mode == "RGB" for im in item.images)
    assert got[0].images[0].size == (448, 896)
