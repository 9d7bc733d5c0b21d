"""`infimm-hd ask` and `infimm-hd chat`, run in-process (`ask_main`/`chat_main`) and once through the real entry
point with questions piped on stdin. Answers are compared with the Python API on the same saved model.

The fixture model is the tiny preset saved with `save_pretrained`, with large gates (answers follow the image) and an
LM head that can only say lower-case letters and spaces (other rows zeroed, letter rows scaled up), so the byte-level
answers are readable text rather than replacement characters that all look alike.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

import infimm_hd
from infimm_hd.inference.commands import ask_main, chat_main
from infimm_hd.inference.loading import load_model
from tests.conftest import make_image, randomize_gates

LETTERS = "abcdefghijklmnopqrstuvwxyz "


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(model folder, a 4-window test image path, the model loaded back through the CLI's own loader)."""
    model, processor = infimm_hd.build_model("tiny", seed=0)
    randomize_gates(model, scale=4.0)
    letters = [processor.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in LETTERS]
    with torch.no_grad():
        head = model.get_output_embeddings().weight  # (V, D)
        keep = torch.zeros(head.shape[0], dtype=torch.bool)
        keep[letters] = True
        head[~keep] = 0.0
        head[keep] *= 20.0
    folder = tmp_path_factory.mktemp("tiny-letters")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    image_path = folder / "picture.png"
    base = make_image(4, seed=21)
    Image.blend(base, Image.new("RGB", base.size, "orange"), 0.75).save(image_path)
    return str(folder), str(image_path), load_model(str(folder), device="cpu")


def test_ask_prints_the_api_answer_and_json_report(saved, capsys):
    folder, image, (model, processor) = saved
    expected = infimm_hd.answer(model, processor, image, "What is it?", max_new_tokens=12)
    assert expected.strip() and set(expected) <= set(LETTERS), expected

    assert ask_main(["--model", folder, "--image", image, "What is it?", "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out == expected + "\n"

    argv = ["--model", folder, "--image", image, "What is it?", "--max-new-tokens", "12", "--json", "--timings"]
    assert ask_main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["answer"] == expected and report["question"] == "What is it?"
    assert report["timings"]["new_tokens"] == 12 and report["timings"]["vision_s"] > 0


def test_ask_stream_and_timings(saved, capsys):
    folder, image, (model, processor) = saved
    expected = infimm_hd.answer(model, processor, image, "Describe it.", max_new_tokens=10, system="Be short.")
    argv = ["--model", folder, "--image", image, "Describe it.", "--max-new-tokens", "10", "--system", "Be short."]
    assert ask_main([*argv, "--stream", "--timings"]) == 0
    captured = capsys.readouterr()
    assert captured.out == expected + "\n"
    assert "prefill" in captured.err and "tokens/s" in captured.err and "first token" in captured.err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.png", "image file not found"),
        (lambda tmp: (tmp / "notes.png").write_text("not an image") and tmp / "notes.png", "cannot identify"),
    ],
)
def test_ask_and_chat_refuse_bad_images_with_exit_code_2(saved, tmp_path, capsys, make, message):
    folder, _, _ = saved
    path = str(make(tmp_path))
    for main, extra in ((ask_main, ["What?"]), (chat_main, [])):
        assert main(["--model", folder, "--image", path, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, err


def test_ask_refuses_a_missing_model_folder(saved, tmp_path, capsys):
    _, image, _ = saved
    assert ask_main(["--model", str(tmp_path / "no-such-model"), "--image", image, "What?"]) == 2
    assert "cannot load the model" in capsys.readouterr().err


@pytest.mark.parametrize("main", [ask_main, chat_main])
def test_help(main, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--model" in out and "--image" in out and "--max-windows" in out


def test_ask_attention_map_writes_a_png(saved, tmp_path, capsys, monkeypatch):
    attention_map = pytest.importorskip("infimm_hd.inference.attention_map")
    answer_module = importlib.import_module("infimm_hd.inference.answer")  # the package re-exports `answer` itself

    folder, image, _ = saved
    maps, streams = [], []
    real_map, real_stream = attention_map.answer_attention_map, answer_module.stream

    def recording_map(model, processor, image, question, answer, **kwargs):
        maps.append(answer)
        return real_map(model, processor, image, question, answer, **kwargs)

    def recording_stream(*args, **kwargs):
        streams.append(real_stream(*args, **kwargs))
        return streams[-1]

    monkeypatch.setattr(attention_map, "answer_attention_map", recording_map)
    monkeypatch.setattr(answer_module, "stream", recording_stream)
    out_png = tmp_path / "where.png"
    argv = ["--model", folder, "--image", image, "What?", "--max-new-tokens", "4", "--attention-map", str(out_png)]
    assert ask_main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["attention_map"] == str(out_png)
    # The map is over the tokens the model generated, not over a re-tokenisation of the answer text.
    assert maps == [streams[0].answer_ids] and all(isinstance(i, int) for i in maps[0])
    with Image.open(out_png) as picture:
        assert picture.format == "PNG" and picture.width > 0


def test_chat_piped_through_the_entry_point_keeps_the_conversation(saved):
    folder, image, (model, processor) = saved
    questions = ["What is it?", "And then?", "/reset", "What is it?", "/quit", "never read"]
    run = subprocess.run(
        [sys.executable, "-m", "infimm_hd.cli", "chat", "--model", folder, "--image", image, "--max-new-tokens", "8"],
        input="\n".join(questions) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    first = infimm_hd.answer(model, processor, image, "What is it?", max_new_tokens=8)
    second = infimm_hd.answer(
        model, processor, image, "And then?", history=[("What is it?", first.strip())], max_new_tokens=8
    )
    assert lines == [first, second, "(conversation reset)", first], run.stdout
