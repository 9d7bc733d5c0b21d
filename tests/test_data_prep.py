"""data_prep: every converter on small fixtures, idempotency, and the synthetic set checked against its own pixels.

Fixture images are real scikit-image photos (downsized) saved as PNG/JPEG, plus a truncated JPEG, a text file named
.jpg and a path that does not exist: each must be skipped and counted by reason, never crash a run. Shards are read
back with webdataset and every sample must pass the sample contract with the right image count.
"""

from __future__ import annotations

import doctest
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from skimage import data as skdata

from data_prep import corner_glyphs, cot, llava, pairs, rlhf, shards, synthetic, word_problems
from data_prep.corner_glyphs import CORNERS, PALETTE, corner_box, draw_glyph, glyph_mask, render_sample
from infimm_hd.training.sample_format import image_keys, validate_record

MODULES = [pairs, llava, cot, rlhf, synthetic]


# -- helpers ---------------------------------------------------------------------------------------------------------


def read_samples(out: Path, pattern: str = "*.tar") -> list[dict[str, Any]]:
    """Every sample of the shards under `out` matching `pattern`, checked against the contract; images decoded."""
    urls = sorted(str(p) for p in out.glob(pattern))
    samples = []
    for raw in wds.WebDataset(urls, shardshuffle=False):
        record = json.loads(raw["json"])
        keys = image_keys(raw)
        validate_record(record, len(keys))
        images = []
        for key in keys:
            with Image.open(io.BytesIO(raw[key])) as image:
                image.load()  # the bytes decode completely
                images.append(image.copy())
        samples.append({"key": raw["__key__"], "record": record, "images": images, "raw": raw, "image_keys": keys})
    return samples


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def texts(message: dict[str, Any]) -> list[str]:
    return [p.get("text", "<IMG>") for p in message["content"]]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """Real photos (small) as PNG and JPEG, a truncated JPEG, a non-image named .jpg, a BMP, and a missing path."""
    root = tmp_path_factory.mktemp("images")
    paths = {name: root / name for name in ("astronaut.png", "coffee.jpg", "chelsea.jpg", "truncated.jpg")}
    Image.fromarray(skdata.astronaut()).resize((64, 64)).save(paths["astronaut.png"])
    Image.fromarray(skdata.coffee()).resize((96, 64)).save(paths["coffee.jpg"], quality=90)
    Image.fromarray(skdata.chelsea()).resize((90, 60)).save(paths["chelsea.jpg"], quality=90)
    full = paths["chelsea.jpg"].read_bytes()
    paths["truncated.jpg"].write_bytes(full[: len(full) // 2])
    paths["text.jpg"] = root / "text.jpg"
    paths["text.jpg"].write_text("not an image")
    paths["rocket.bmp"] = root / "rocket.bmp"
    Image.fromarray(skdata.rocket()).resize((40, 30)).save(paths["rocket.bmp"])
    paths["missing.png"] = root / "missing.png"
    return paths


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# -- command lines and doctests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_help_opens_with_the_commands(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert f"python -m {module.__name__}" in capsys.readouterr().out, "the help should show how to run the script"


def test_rlhf_subcommand_help(capsys):
    for kind in ("prompts", "preferences"):
        with pytest.raises(SystemExit) as exit_info:
            rlhf.main([kind, "--help"])
        assert exit_info.value.code == 0
        assert "--image-root" in capsys.readouterr().out


@pytest.mark.parametrize("module", [shards, corner_glyphs, cot, llava, word_problems], ids=lambda m: m.__name__)
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.failed == 0, f"{result.failed} doctest(s) of {module.__name__} failed"


# -- converters ------------------------------------------------------------------------------------------------------


def test_pairs_jsonl_writes_good_images_and_counts_bad_ones(images, tmp_path):
    rows = [
        {"id": "astro", "image": str(images["astronaut.png"]), "caption": "An astronaut."},  # absolute path
        {"id": "coffee", "image": "coffee.jpg", "caption": "A cup of coffee."},  # relative to the table
        {"id": "rocket", "image": "rocket.bmp", "caption": "A rocket."},  # re-encoded as PNG
        {"id": "trunc", "image": "truncated.jpg", "caption": "Half a cat."},
        {"id": "text", "image": "text.jpg", "caption": "Not an image."},
        {"id": "gone", "image": "missing.png", "caption": "Nothing."},
        {"id": "nocap", "image": "coffee.jpg"},
        "{not json",
    ]
    table = write_jsonl(images["coffee.jpg"].parent / "pairs.jsonl", rows)
    out = tmp_path / "pairs"
    pairs.main(["--input", str(table), "--out", str(out), "--shard-size", "2"])

    m = manifest(out)
    assert m["counts"]["samples"] == {"caption": {"train": 3}}
    skipped = m["counts"]["skipped"]
    assert skipped["by_reason"] == {
        "bad_row": 1,
        "corrupt_image": 1,
        "missing_field": 1,
        "missing_image": 1,
        "not_an_image": 1,
    }
    assert skipped["first_ids"]["corrupt_image"] == ["trunc"] and skipped["first_ids"]["missing_image"] == ["gone"]
    assert [s["samples"] for s in m["shards"]] == [2, 1], "--shard-size 2 should split 3 samples into 2 + 1"

    samples = {s["record"]["id"]: s for s in read_samples(out)}
    assert set(samples) == {"astro", "coffee", "rocket"}
    coffee = samples["coffee"]
    assert coffee["image_keys"] == ["0.jpg"]
    assert coffee["raw"]["0.jpg"] == images["coffee.jpg"].read_bytes(), "JPEG sources must be stored unchanged"
    assert samples["astro"]["raw"]["0.png"] == images["astronaut.png"].read_bytes()
    assert samples["rocket"]["image_keys"] == ["0.png"] and samples["rocket"]["images"][0].size == (40, 30)
    user, assistant = coffee["record"]["messages"]
    assert user["content"] == [{"type": "image"}, {"type": "text", "text": pairs.DEFAULT_PROMPT}]
    assert texts(assistant) == ["A cup of coffee."] and coffee["record"]["answer"] == "A cup of coffee."
    assert sum(s["sha256"] == shards.file_sha256(out / s["path"]) for s in m["shards"]) == len(m["shards"])


def test_pairs_csv_with_custom_columns(images, tmp_path):
    table = tmp_path / "pairs.csv"
    table.write_text(f"path,text\n{images['chelsea.jpg']},A cat.\n{images['missing.png']},Gone.\n")
    out = tmp_path / "out"
    args = ["--input", str(table), "--out", str(out), "--image-column", "path", "--caption-column", "text"]
    pairs.main([*args, "--prompt", "Caption:", "--split", "val"])
    (sample,) = read_samples(out, "val-*.tar")
    assert texts(sample["record"]["messages"][0]) == ["<IMG>", "Caption:"]
    assert sample["record"]["id"] == "row0" and sample["key"] == "row0"
    assert manifest(out)["counts"]["skipped"]["by_reason"] == {"missing_image": 1}


def test_pairs_parquet_needs_pyarrow_or_pandas(images, tmp_path, capsys):
    table = tmp_path / "pairs.parquet"
    if pairs.parquet_library() is None:
        table.write_bytes(b"PAR1")
        with pytest.raises(SystemExit) as exit_info:
            pairs.main(["--input", str(table), "--out", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        assert "pyarrow" in capsys.readouterr().err, "the error should say what to install"
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [str(images["chelsea.jpg"])], "caption": ["A cat."]}), table)
    pairs.main(["--input", str(table), "--out", str(tmp_path / "out")])
    assert len(read_samples(tmp_path / "out")) == 1


def test_llava_image_placement_multi_turn_and_skips(images, tmp_path):
    items = [
        {"id": "single", "image": "coffee.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is in the cup?"}, {"from": "gpt", "value": "Coffee."}]},
        {"id": "middle", "image": "astronaut.png", "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Look at this: <image>\nWho is it?"}, {"from": "gpt", "value": "An astronaut."},
            {"from": "human", "value": "Where?"}, {"from": "gpt", "value": "In front of a flag."}]},
        {"id": "notoken", "image": "chelsea.jpg", "conversations": [
            {"from": "human", "value": "What animal?"}, {"from": "gpt", "value": "A cat."}]},
        {"id": "textonly", "conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]},
        {"id": "gone", "image": "missing.png", "conversations": [
            {"from": "human", "value": "<image>\n?"}, {"from": "gpt", "value": "!"}]},
        {"id": "twotokens", "image": "coffee.jpg", "conversations": [
            {"from": "human", "value": "<image><image>?"}, {"from": "gpt", "value": "!"}]},
        {"id": "speaker", "conversations": [{"from": "robot", "value": "?"}, {"from": "gpt", "value": "!"}]},
        {"id": "trunc", "image": "truncated.jpg", "conversations": [
            {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "!"}]},
    ]  # fmt: skip
    source = tmp_path / "llava.json"
    source.write_text(json.dumps(items))
    out = tmp_path / "out"
    llava.main(["--input", str(source), "--image-root", str(images["coffee.jpg"].parent), "--out", str(out)])

    by_id = {s["record"]["id"]: s for s in read_samples(out)}
    assert set(by_id) == {"single", "middle", "notoken", "textonly"}
    assert [texts(m) for m in by_id["single"]["record"]["messages"]] == [["<IMG>", "What is in the cup?"], ["Coffee."]]
    middle = by_id["middle"]["record"]
    assert [m["role"] for m in middle["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert texts(middle["messages"][1]) == ["Look at this:", "<IMG>", "Who is it?"], "image part where <image> was"
    assert middle["answer"] == "In front of a flag." and middle["task"] == "vqa"
    assert texts(by_id["notoken"]["record"]["messages"][0]) == ["<IMG>", "What animal?"], "LLaVA: image first"
    assert by_id["textonly"]["image_keys"] == [] and by_id["single"]["image_keys"] == ["0.jpg"]
    assert manifest(out)["counts"]["skipped"]["by_reason"] == {
        "bad_conversation": 1,
        "corrupt_image": 1,
        "image_token_mismatch": 1,
        "missing_image": 1,
    }


def test_cot_gsm8k_format(tmp_path):
    answer = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 1,000+24 = <<1000+24=1024>>1,024.\n#### 1,024"
    rows = [{"question": "How many clips?", "answer": answer}, {"question": "No final?", "answer": "Just text."}]
    source = write_jsonl(tmp_path / "gsm8k.jsonl", rows)
    cot.main(["--input", str(source), "--out", str(tmp_path / "exact")])
    (sample,) = read_samples(tmp_path / "exact")
    record = sample["record"]
    reasoning = answer.rpartition("####")[0].strip()
    assert record["task"] == "cot" and record["answer"] == "1024", "final answer without thousands commas"
    assert texts(record["messages"][1]) == [f"{reasoning}\nThe answer is 1024."], "reasoning kept exactly"
    assert record["messages"][1]["content"][0]["text"] == cot.format_cot(reasoning, "1024")
    assert manifest(tmp_path / "exact")["counts"]["skipped"]["by_reason"] == {"no_final_answer": 1}

    cot.main(["--input", str(source), "--out", str(tmp_path / "stripped"), "--strip-calculator"])
    (sample,) = read_samples(tmp_path / "stripped")
    assert "<<" not in sample["record"]["messages"][1]["content"][0]["text"]


def test_rlhf_prompts_and_preferences(images, tmp_path):
    root = str(images["coffee.jpg"].parent)
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            {"prompt": "What is 2+3?", "answer": 5},
            {"prompt": "What is in <image> this cup?", "image": "coffee.jpg", "answer": "coffee"},
            {"prompt": "Describe.", "image": "missing.png"},
        ],
    )
    rlhf.main(["prompts", "--input", str(prompts), "--out", str(tmp_path / "p"), "--image-root", root])
    text_only, with_image = (s["record"] for s in read_samples(tmp_path / "p"))
    assert text_only["task"] == "prompt" and text_only["answer"] == "5" and len(text_only["messages"]) == 1
    assert texts(with_image["messages"][0]) == ["What is in", "<IMG>", "this cup?"]
    assert manifest(tmp_path / "p")["counts"]["skipped"]["by_reason"] == {"missing_image": 1}

    prefs = write_jsonl(
        tmp_path / "prefs.jsonl",
        [
            {"prompt": "What animal?", "image": "chelsea.jpg", "chosen": "A cat.", "rejected": "A dog."},
            {"prompt": "Same?", "chosen": "Yes.", "rejected": "Yes."},
            {"prompt": "No rejected?", "chosen": "Yes."},
        ],
    )
    rlhf.main(["preferences", "--input", str(prefs), "--out", str(tmp_path / "q"), "--image-root", root])
    (sample,) = read_samples(tmp_path / "q")
    record = sample["record"]
    assert record["task"] == "preference" and sample["image_keys"] == ["0.jpg"]
    assert [m["role"] for m in record["messages"]] == ["user", "assistant"] and texts(record["messages"][1]) == [
        "A cat."
    ]
    assert record["rejected"] == [{"role": "assistant", "content": [{"type": "text", "text": "A dog."}]}]
    assert manifest(tmp_path / "q")["counts"]["skipped"]["by_reason"] == {"identical_pair": 1, "missing_field": 1}


# -- idempotency -----------------------------------------------------------------------------------------------------


def shard_mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.rglob("*.tar")}


def test_rerun_is_a_no_op_until_arguments_or_shards_change(images, tmp_path, capsys):
    rows = [{"image": str(images[n]), "caption": n} for n in ("astronaut.png", "coffee.jpg", "chelsea.jpg")]
    table = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "out"
    args = ["--input", str(table), "--out", str(out), "--shard-size", "1"]
    first = pairs.main(args)
    before, capsys_first = shard_mtimes(out), capsys.readouterr().out
    assert len(before) == 3 and "building" in capsys_first

    assert pairs.main(args) == first
    assert "up to date" in capsys.readouterr().out and shard_mtimes(out) == before, "a re-run must not rewrite"

    (out / "train-00001.tar").write_bytes(b"damaged")
    pairs.main(args)
    assert "train-00001.tar is missing or damaged" in capsys.readouterr().out
    assert manifest(out)["shards"] == first["shards"], "the rebuild restores identical shards"

    pairs.main([*args[:-1], "3"])  # another --shard-size: rebuild into one shard, the three old ones removed
    assert "arguments changed" in capsys.readouterr().out
    assert sorted(shard_mtimes(out)) == ["train-00000.tar"] and len(read_samples(out)) == 3

    table.write_text(table.read_text().replace('coffee.jpg"}', 'coffee.jpg, edited"}'))
    pairs.main([*args[:-1], "3"])
    assert "inputs changed" in capsys.readouterr().out, "an edited table must rebuild"


# -- synthetic -------------------------------------------------------------------------------------------------------

TINY = dict(num_images_train=10, num_images_heldout=5, seed=3, shard_size=4, word_problems=0.6)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("synthetic")
    return out, synthetic.generate(out, workers=1, log=lambda _: None, **TINY)


def read_corner(pixels: np.ndarray, corner: str, glyph_scale: int = 1, margin: int = 8, plate_margin: int = 2):
    """(digit, colour) read back from the pixels of a corner's plate, or None when it holds no font glyph.

    Independent of the renderer's bookkeeping: the plate must be one solid colour around the glyph box, and the ink
    inside must be one palette colour whose shape equals exactly one digit of the font.
    """
    left, top, right, bottom = corner_box(pixels.shape[1], pixels.shape[0], corner, glyph_scale, margin, plate_margin)
    plate = pixels[top:bottom, left:right].astype(int)
    inner = plate[plate_margin : plate.shape[0] - plate_margin, plate_margin : plate.shape[1] - plate_margin]
    border = np.ones(plate.shape[:2], bool)
    border[plate_margin:-plate_margin, plate_margin:-plate_margin] = False
    plate_colour = plate[0, 0]
    if not (plate[border] == plate_colour).all():
        return None
    ink = (inner != plate_colour).any(axis=-1)
    matches = [d for d in range(10) if np.array_equal(ink, glyph_mask(d, glyph_scale))]
    colours = {tuple(int(v) for v in c) for c in inner[ink]}
    if len(matches) != 1 or len(colours) != 1:
        return None
    (colour,) = colours
    names = [name for name, rgb in PALETTE.items() if rgb == colour]
    return (matches[0], names[0]) if names else None


def test_synthetic_answers_match_the_pixels(tiny_set):
    out, _ = tiny_set
    checked = 0
    for sample in read_samples(out, "*/*.tar"):
        record = sample["record"]
        if not sample["images"]:
            assert record["meta"]["qtype"] == "word_problem" and record["task"] == "cot"
            continue
        pixels = np.asarray(sample["images"][0].convert("RGB"))
        seen = {c: read_corner(pixels, c) for c in CORNERS}
        seen = {c: v for c, v in seen.items() if v is not None}
        truth = {c: (g["digit"], g["colour"]) for c, g in record["meta"]["truth"]["corners"].items()}
        assert seen == truth, f"{record['id']}: the pixels show {seen}, the record says {truth}"
        meta, answer = record["meta"], record["answer"]
        corner = meta.get("corner")
        final_text = record["messages"][-1]["content"][-1].get("text") if record["task"] != "prompt" else None
        if record["task"] in ("vqa", "prompt", "preference") and meta["qtype"] == "digit":
            assert answer == str(seen[corner][0]) and corner in record["messages"][0]["content"][1]["text"]
        elif meta.get("qtype") == "colour":
            assert answer == seen[corner][1]
        elif meta.get("qtype") == "count":
            assert answer == str(len(seen))
        elif record["task"] == "cot":
            digits = [seen[c][0] for c in CORNERS if c in seen and c in record["messages"][0]["content"][1]["text"]]
            assert answer == str(sum(digits) if meta["qtype"] == "sum" else 2 * digits[0])
            assert final_text.endswith(f"\nThe answer is {answer}.")
        elif record["task"] == "caption":
            assert all(f"a {col} {d} in the {c} corner" in answer for c, (d, col) in seen.items())
        if record["task"] in ("vqa", "preference"):
            assert final_text == answer
        if record["task"] == "preference":
            assert texts(record["rejected"][0]) != [answer] and texts(record["rejected"][0])[0].isdigit()
        checked += 1
    assert checked == 5 * 15


def test_synthetic_manifest_counts_match_the_shards(tiny_set):
    out, m = tiny_set
    assert m["counts"]["skipped"]["total"] == 0, m["counts"]["skipped"]
    samples = read_samples(out, "*/*.tar")
    assert len(samples) == sum(s["samples"] for s in m["shards"])
    for task in synthetic.TASKS:
        for split, n_images in (("train", 10), ("heldout", 5)):
            found = [s for s in samples if s["record"]["task"] == task and s["record"]["meta"]["split"] == split]
            expected = n_images + (round(0.6 * n_images) if task == "cot" else 0)
            assert m["counts"]["samples"][task][split] == len(found) == expected, f"{task}/{split}"
            assert m["counts"]["images"][task][split] == n_images
            qtypes: dict[str, int] = {}
            for s in found:
                if "qtype" in s["record"]["meta"]:
                    qtypes[s["record"]["meta"]["qtype"]] = qtypes.get(s["record"]["meta"]["qtype"], 0) + 1
            assert m["counts"]["qtypes"].get(task, {}).get(split, {}) == qtypes, f"{task}/{split} qtypes"
    for shard in m["shards"]:
        assert shard["path"].split("/")[0] in synthetic.TASKS and shard["samples"] <= TINY["shard_size"]


def test_synthetic_is_deterministic_and_splits_are_disjoint(tiny_set, tmp_path):
    out, m = tiny_set
    again = synthetic.generate(tmp_path, workers=2, log=lambda _: None, **TINY)  # more workers: same bytes
    assert again["shards"] == m["shards"], "same arguments must give byte-identical shards"
    assert all(shards.file_sha256(tmp_path / s["path"]) == s["sha256"] for s in again["shards"])

    vqa = read_samples(out, "vqa/*.tar")
    by_split = {split: [s for s in vqa if s["record"]["meta"]["split"] == split] for split in synthetic.SPLITS}
    hashes = {split: {shards.hashlib.sha256(s["raw"]["0.png"]).hexdigest() for s in v} for split, v in by_split.items()}
    assert len(hashes["train"]) == 10 and len(hashes["heldout"]) == 5
    assert not hashes["train"] & hashes["heldout"], "train and heldout must not share images"
    assert not {s["key"] for s in by_split["train"]} & {s["key"] for s in by_split["heldout"]}

    other_seed = synthetic.generate(tmp_path / "seed4", workers=1, log=lambda _: None, **{**TINY, "seed": 4})
    assert {s["sha256"] for s in other_seed["shards"]}.isdisjoint({s["sha256"] for s in m["shards"]})


def test_synthetic_task_subset_writes_the_same_records(tiny_set, tmp_path, capsys):
    out, m = tiny_set
    subset = synthetic.generate(tmp_path, workers=1, **{**TINY, "tasks": ("vqa",)})
    assert [s for s in m["shards"] if s["path"].startswith("vqa/")] == subset["shards"]
    synthetic.generate(tmp_path, workers=1, **{**TINY, "tasks": ("vqa",)})
    assert "up to date" in capsys.readouterr().out


# -- the thumbnail really loses the glyph ----------------------------------------------------------------------------


def _zscore(x: np.ndarray) -> np.ndarray:
    x = x.astype(float).ravel() - x.mean()
    return x / (np.linalg.norm(x) + 1e-9)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(float) @ np.array([0.299, 0.587, 0.114])


def test_thumbnail_loses_most_of_the_glyph_windows_keep_all_of_it():
    """Nearest-template reading of each corner: 100% at full resolution, about half in the 448 thumbnail of a 1344
    px canvas (measured 51% over 240 glyphs; chance is 10%).

    The templates favour the thumbnail reader as much as possible: each is the digit drawn (black on a white plate)
    at the very same corner of a grey 1344 px canvas and downsampled the same way, so position and sub-pixel phase
    match exactly, and the reader is told the plate's polarity; only the digit's shape is left to recognise. That a
    reader this well informed still gets half right is the honest limit of a 3x reduction of a clean 5x7 glyph: the
    thumbnail blurs it badly but does not erase it (at 2x, a 2x2 grid, it reads about 90%).
    """
    size, factor = 1344, 3
    rng = np.random.default_rng(0)
    thumb_templates, full_templates, regions = {}, {}, {}
    for corner in CORNERS:
        left, top, right, bottom = corner_box(size, size, corner)
        regions[corner] = (top // factor, -(-bottom // factor), left // factor, -(-right // factor))
        for digit in range(10):
            canvas = np.full((size, size, 3), 128, np.uint8)
            draw_glyph(canvas, corner, digit, "black")
            t0, t1, l0, l1 = regions[corner]
            thumb = np.asarray(Image.fromarray(canvas).resize((448, 448), Image.Resampling.BICUBIC))
            thumb_templates[corner, digit] = _zscore(_gray(thumb[t0:t1, l0:l1]))
            full_templates[corner, digit] = _zscore(_gray(canvas[top:bottom, left:right]))

    right = {"thumbnail": 0, "window": 0}
    total = 0
    for _ in range(60):
        image, truth = render_sample(rng, grids=[(3, 3)], min_corners=4)
        pixels = np.asarray(image)
        thumb = np.asarray(image.resize((448, 448), Image.Resampling.BICUBIC))
        for corner, glyph in truth["corners"].items():
            sign = 1.0 if glyph["plate"] == "white" else -1.0  # the templates are dark ink on a light plate
            left, top, r, b = corner_box(size, size, corner)
            t0, t1, l0, l1 = regions[corner]
            for name, x, templates in (
                ("window", _zscore(_gray(pixels[top:b, left:r])), full_templates),
                ("thumbnail", _zscore(_gray(thumb[t0:t1, l0:l1])), thumb_templates),
            ):
                scores = [sign * x @ templates[corner, d] for d in range(10)]
                right[name] += int(np.argmax(scores)) == glyph["digit"]
            total += 1
    window, thumbnail = right["window"] / total, right["thumbnail"] / total
    assert window == 1.0, f"full resolution should read every glyph, read {window:.0%}"
    assert thumbnail < 0.6, f"the thumbnail should lose most of the glyph, still read {thumbnail:.0%} (window 100%)"


def test_fine_patterns_vanish_from_the_thumbnail_and_stay_in_the_window():
    """The four pattern kinds share one mean colour: after the image processor's 3x antialiased thumbnail their
    squares are flat (per-channel std ~1 of 255 levels, measured) and of the same colour, while in the window the
    2-px, 128-level pattern is intact (an independent pixel check)."""
    from data_prep.corner_glyphs import PATTERN_SIDE, PATTERNS
    from infimm_hd.image_processing import InfiMMHDImageProcessor

    processor = InfiMMHDImageProcessor()
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(12):
        image, truth = render_sample(rng, grids=[(3, 3)], pattern=True, photo_fraction=0.0)
        kind, (row, col), box = truth["pattern"]["kind"], truth["pattern"]["window"], truth["pattern"]["box"]
        seen.add(kind)
        out = processor.process([image], max_windows=9)
        levels = out.pixel_values * torch.tensor(processor.image_std).view(3, 1, 1) * 255
        levels = levels + torch.tensor(processor.image_mean).view(3, 1, 1) * 255  # back to 0..255
        window = levels[1 + row * 3 + col]  # (3, 448, 448)
        inner = slice((448 - PATTERN_SIDE) // 2 + 8, (448 + PATTERN_SIDE) // 2 - 8)
        full = window[:, inner, inner]
        left, top = box[0] // 3 + 4, box[1] // 3 + 4
        thumb = levels[0][:, top : top + PATTERN_SIDE // 3 - 8, left : left + PATTERN_SIDE // 3 - 8]
        full_std, thumb_std = full.std(dim=(1, 2)).max(), thumb.std(dim=(1, 2)).max()  # per channel
        if kind == "plain":
            assert full_std < 1.0
        else:
            assert full_std > 50, f"{kind}: the window must keep the 128-level pattern, std {full_std:.1f}"
        assert thumb_std < 2.0, f"{kind}: the thumbnail must smooth the pattern away, std {thumb_std:.1f}"
        mean = full.mean(dim=(1, 2))
        torch.testing.assert_close(thumb.mean(dim=(1, 2)), mean, atol=3.0, rtol=0)  # same flat colour
    assert seen == set(PATTERNS)
