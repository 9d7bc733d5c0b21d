"""The processor the Hugging Face way: AutoProcessor round trip, chat templates, and pipeline("image-text-to-text")."""

from __future__ import annotations

import pytest
import torch
from conftest import make_image, randomize_gates
from transformers import AutoProcessor, pipeline

import infimm_hd
from infimm_hd.processing import VICUNA_CHAT_TEMPLATE

QUESTION = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]


def with_image(image):
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is it?"}]}]


@pytest.fixture
def saved(tmp_path):
    model, processor = infimm_hd.build_model("tiny")
    randomize_gates(model)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    return tmp_path, model, processor


def test_auto_processor_round_trip_gives_identical_inputs(saved):
    folder, _, processor = saved
    loaded = AutoProcessor.from_pretrained(folder)
    assert type(loaded) is type(processor)
    assert loaded.image_processor.max_windows == processor.image_processor.max_windows
    assert loaded.image_token_id == processor.image_token_id
    args = dict(text=["a <image> b", "c"], images=[[make_image(6, 0)], []])
    a, b = processor(**args), loaded(**args)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_default_chat_template_is_the_papers_vicuna_format(saved):
    _, _, processor = saved
    assert processor.chat_template == VICUNA_CHAT_TEMPLATE  # the byte tokenizer has no template of its own
    text = processor.apply_chat_template(QUESTION, add_generation_prompt=True)
    assert text == (
        "<s>A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <image>What is it? ASSISTANT:"
    )
    turns = QUESTION + [{"role": "assistant", "content": "A cat."}, {"role": "user", "content": "Sure?"}]
    assert processor.apply_chat_template(turns).endswith(
        " USER: <image>What is it? ASSISTANT: A cat.<|endofchunk|> USER: Sure?"
    )


def test_chat_template_tokenises_with_images_from_parts_or_argument(saved):
    _, _, processor = saved
    image = make_image(4, 1)
    from_part = processor.apply_chat_template(
        with_image(image), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    from_arg = processor.apply_chat_template(
        QUESTION, add_generation_prompt=True, tokenize=True, return_dict=True, images=[[image]]
    )
    assert torch.equal(from_part["pixel_values"], from_arg["pixel_values"])
    assert torch.equal(from_part["input_ids"], from_arg["input_ids"])
    assert from_part["image_grids"].tolist() == [[2, 2]]
    assert int((from_part["input_ids"] == processor.image_token_id).sum()) == 1
    with pytest.raises(ValueError, match="local files only"):
        processor.apply_chat_template(with_image("https://example.com/cat.png"), tokenize=True)
    with pytest.raises(ValueError, match="no image"):
        processor.apply_chat_template(QUESTION, tokenize=True)


@torch.no_grad()
def test_pipeline_answers_like_generate(saved):
    folder, model, processor = saved
    image = make_image(4, 2)
    pipe = pipeline("image-text-to-text", model=str(folder))
    out = pipe(text=with_image(image), max_new_tokens=6, do_sample=False)
    answer = out[0]["generated_text"][-1]["content"]
    inputs = processor.apply_chat_template(
        with_image(image), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    ids = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert answer == processor.decode(ids[0, inputs["input_ids"].shape[1] :])


@pytest.mark.real_llm
@torch.no_grad()
def test_smollm2_uses_its_own_chat_template_and_pipeline_answers(tmp_path):
    model, processor = infimm_hd.build_model("smollm2-135m")
    assert processor.chat_template == processor.tokenizer.chat_template
    text = processor.apply_chat_template(QUESTION, add_generation_prompt=True)
    assert "<|im_start|>user\n<image>What is it?<|im_end|>" in text
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    pipe = pipeline("image-text-to-text", model=str(tmp_path))
    out = pipe(text=with_image(make_image(1, 3)), max_new_tokens=12, do_sample=False)
    assert len(out[0]["generated_text"][-1]["content"].strip()) > 0


CONVERSATION = QUESTION + [
    {"role": "assistant", "content": "A cat."},
    {"role": "user", "content": "Sure?"},
    {"role": "assistant", "content": "Yes."},
]


def labelled_text(processor, out, row: int) -> str:
    ids, labels = out["input_ids"][row], out["labels"][row]
    return processor.tokenizer.decode(ids[labels != -100], skip_special_tokens=False)


def test_labels_cover_exactly_the_assistant_turns(saved):
    _, _, processor = saved
    image = make_image(1, 4)
    out = processor.apply_chat_template(
        [CONVERSATION, CONVERSATION[:2]], tokenize=True, return_dict=True, return_labels=True, images=[[image], [image]]
    )
    assert labelled_text(processor, out, 0) == " A cat.<|endofchunk|> Yes.<|endofchunk|>"
    assert labelled_text(processor, out, 1) == " A cat.<|endofchunk|>"
    labels, ids = out["labels"], out["input_ids"]
    assert (labels[ids == processor.image_token_id] == -100).all()
    assert (labels[out["attention_mask"] == 0] == -100).all()
    kept = labels != -100
    assert torch.equal(labels[kept], ids[kept]), "labels keep the original token ids"


@pytest.mark.real_llm
def test_smollm2_labels_follow_its_own_template():
    _, processor = infimm_hd.build_model("smollm2-135m")
    out = processor.apply_chat_template(
        CONVERSATION[:2], tokenize=True, return_dict=True, return_labels=True, images=[[make_image(1, 5)]]
    )
    assert labelled_text(processor, out, 0) == "A cat.<|im_end|>\n"


def test_channels_last_pixel_values_give_the_logits_of_nchw_memory(saved):
    """The processor hands out channels-last pixel_values; the model must not care about the memory layout."""
    _, model, processor = saved
    inputs = processor(text=["a <image> b"], images=[[make_image(6, 0)]], return_tensors="pt")
    assert inputs["pixel_values"].is_contiguous(memory_format=torch.channels_last)
    nchw = {**inputs, "pixel_values": inputs["pixel_values"].contiguous()}
    with torch.no_grad():
        a, b = model(**inputs).logits, model(**nchw).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
