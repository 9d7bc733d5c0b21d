"""The inference API: `answer`, `answer_batch`, `stream` and image sessions, checked against fresh calls.

The tiny model's byte vocabulary would decode random output to replacement characters, which all look alike, so the
tiny tests restrict generation to lower-case letters and spaces (a logits processor passed through
`generate_kwargs`): answers are then readable and differ from image to image, which the equality checks rely on.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

import infimm_hd
from infimm_hd.inference import Turn, open_image, render_prompt
from infimm_hd.inference.prefix_cache import PrefixCache, common_prefix_length
from tests.conftest import make_image, randomize_gates

LETTERS = "abcdefghijklmnopqrstuvwxyz "


class OnlyTokens(LogitsProcessor):
    """Masks every token but `allowed` (so greedy output stays printable)."""

    def __init__(self, allowed: list[int]):
        self.allowed = torch.tensor(allowed)

    def __call__(self, input_ids, scores):
        masked = torch.full_like(scores, float("-inf"))
        masked[:, self.allowed] = scores[:, self.allowed]
        return masked


def letters_only(processor) -> dict:
    ids = [processor.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in LETTERS]
    return {"logits_processor": LogitsProcessorList([OnlyTokens(ids)])}


COLOURS = ["red", "blue", "green", "white", "black", "yellow", "purple", "orange", "grey"]


def coloured(windows: int, seed: int) -> Image.Image:
    """Noise over a strong colour (from `seed`): the tiny random ViT hardly tells plain noise images apart."""
    base = make_image(windows, seed)
    return Image.blend(base, Image.new("RGB", base.size, COLOURS[seed % len(COLOURS)]), 0.75)


@pytest.fixture
def tiny_model():
    model, processor = infimm_hd.build_model("tiny", seed=0)
    randomize_gates(model, scale=4.0)  # large gates: the answers follow the image
    return model, processor


def count_vision_forwards(model) -> list[int]:
    calls: list[int] = []
    model.vision_tower.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    return calls


# -- fresh calls --------------------------------------------------------------------------------------------------
def test_answer_is_text_that_depends_on_the_image(tiny_model):
    model, processor = tiny_model
    kw = letters_only(processor) | {"max_new_tokens": 12}
    first = infimm_hd.answer(model, processor, coloured(4, seed=1), "What is it?", **kw)
    second = infimm_hd.answer(model, processor, coloured(4, seed=2), "What is it?", **kw)
    assert isinstance(first, str) and len(first) == 12 and set(first) <= set(LETTERS), first
    assert first != second, "answers do not depend on the image, so the equality tests below would prove nothing"


def test_answer_accepts_pil_path_bytes_and_numpy(tiny_model, tmp_path):
    model, processor = tiny_model
    kw = letters_only(processor) | {"max_new_tokens": 8}
    image = coloured(1, seed=3)
    path = tmp_path / "image.png"
    image.save(path)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    answers = [
        infimm_hd.answer(model, processor, source, "What is it?", **kw)
        for source in (image, str(path), buffer.getvalue(), np.asarray(image))
    ]
    assert len(set(answers)) == 1, f"the same image given four ways gave different answers: {answers}"


def test_answer_batch_equals_one_by_one_answers(tiny_model):
    model, processor = tiny_model
    kw = letters_only(processor) | {"max_new_tokens": 10}
    # Different window counts (2, 5, 10 crops) and question lengths: left padding and ragged vision keys.
    images = [coloured(1, seed=4), coloured(9, seed=5), coloured(4, seed=6)]
    questions = ["What?", "Describe the picture in a few words, please.", "Which colour is at the top left?"]
    batched = infimm_hd.answer_batch(model, processor, images, questions, **kw)
    single = [infimm_hd.answer(model, processor, i, q, **kw) for i, q in zip(images, questions, strict=True)]
    assert batched == single


def test_answer_batch_rejects_mismatched_lengths(tiny_model):
    model, processor = tiny_model
    with pytest.raises(ValueError, match="one image per question"):
        infimm_hd.answer_batch(model, processor, [coloured(1, seed=0)], ["a?", "b?"])


def test_stream_concatenates_to_the_answer_and_reports_timings(tiny_model):
    model, processor = tiny_model
    kw = letters_only(processor) | {"max_new_tokens": 16}
    image = coloured(9, seed=7)
    expected = infimm_hd.answer(model, processor, image, "What is it?", **kw)
    result = infimm_hd.stream(model, processor, image, "What is it?", **kw)
    pieces = list(result)
    assert "".join(pieces) == expected == result.text
    assert len(pieces) > 1, "the answer arrived in one piece: nothing was streamed"
    t = result.timings
    assert t.new_tokens == 16 and t.prompt_tokens > 0 and t.reused_prompt_tokens == 0
    assert t.image_s > 0 and t.vision_s > 0 and t.prefill_s > 0 and t.decode_s > 0
    assert t.time_to_first_token_s >= t.image_s + t.vision_s + t.prefill_s
    assert t.total_s >= t.time_to_first_token_s + t.decode_s
    assert t.decode_tokens_per_s == pytest.approx(15 / t.decode_s)
    assert set(t.to_dict()) >= {"vision_s", "prefill_s", "time_to_first_token_s", "decode_tokens_per_s"}
    # The generated ids, EOS and padding dropped: they decode to the text, and are the sequence's new tokens.
    new = result.output.sequences[0, t.prompt_tokens :].tolist()
    special = set(processor.tokenizer.all_special_ids)
    assert result.answer_ids == [i for i in new if i not in special] and len(result.answer_ids) > 1
    assert processor.tokenizer.decode(result.answer_ids) == expected


def test_stream_answer_ids_keep_the_generated_split_and_need_the_end(tiny_model):
    model, processor = tiny_model
    kw = letters_only(processor) | {"max_new_tokens": 12}
    result = infimm_hd.stream(model, processor, coloured(4, seed=3), "What is it?", **kw)
    with pytest.raises(RuntimeError, match="consume"):
        _ = result.answer_ids
    text = result.consume()
    assert processor.tokenizer.decode(result.answer_ids) == text
    assert len(result.answer_ids) == result.timings.new_tokens - sum(
        i in set(processor.tokenizer.all_special_ids)
        for i in result.output.sequences[0, result.timings.prompt_tokens :]
    )


def test_stream_close_cancels_generation(tiny_model):
    model, processor = tiny_model
    # Letters stream token by token (the streamer holds back symbols until a space).
    kw = letters_only(processor) | {"max_new_tokens": 400}
    result = infimm_hd.stream(model, processor, coloured(1, seed=8), "Go on", **kw)
    first = next(result)
    result.close()
    assert result.text.startswith(first)
    assert result.timings.new_tokens < 400, "close() did not stop the generation"


def test_stream_reraises_generation_errors(tiny_model):
    model, processor = tiny_model
    result = infimm_hd.stream(model, processor, coloured(1, seed=8), "Go on", max_new_tokens=-3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        list(result)


def test_prompts_come_from_the_chat_template_with_one_image_token(tiny_model):
    _, processor = tiny_model
    history = [Turn("What is it?", "a cat"), ("And its colour?", "black")]
    text = render_prompt(processor, "Size?", system="Answer in one word.", history=history)
    messages = [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": [{"type": "text", "text": "And its colour?"}]},
        {"role": "assistant", "content": "black"},
        {"role": "user", "content": [{"type": "text", "text": "Size?"}]},
    ]
    assert text == processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text.count("<image>") == 1 and text.startswith("<s>Answer in one word.")
    with pytest.raises(ValueError, match="empty"):
        render_prompt(processor, "  ")


# -- sessions -----------------------------------------------------------------------------------------------------
def test_session_answers_equal_fresh_calls_and_the_vision_tower_runs_once(tiny_model):
    model, processor = tiny_model
    kw = letters_only(processor) | {"max_new_tokens": 12}
    image = coloured(9, seed=9)
    questions = ["What is it?", "Describe the picture.", "How many windows?"]
    fresh = [infimm_hd.answer(model, processor, image, q, **kw) for q in questions]
    calls = count_vision_forwards(model)
    session = infimm_hd.open_image(model, processor, image)
    assert calls == [10], f"open_image should run the ViT once over 10 crops, saw {calls}"
    assert session.context.media is None and set(session.context.kv_cache) == set(model.config.cross_attention_layers)
    assert [session.ask(q, **kw) for q in questions] == fresh
    assert session.stream(questions[0], **kw).consume() == fresh[0]
    assert session.ask_batch(questions, **kw) == fresh
    session.chat(questions[0], **kw)
    session.chat(questions[1], **kw)
    assert len(calls) == 1, f"the vision tower ran {len(calls)} times in one session"


def test_session_ask_batch_equals_individual_asks_and_shares_the_context(tiny_model):
    model, processor = tiny_model
    kw = letters_only(processor) | {"max_new_tokens": 10}
    session = open_image(model, processor, coloured(4, seed=10))
    questions = ["a?", "What is in the middle of the picture?", "Colour?", "Is there text in it, and where?"]
    k_before = {i: kv[0].data_ptr() for i, kv in session.context.kv_cache.items()}
    block = next(iter(model.cross_attention_blocks().values()))
    rows = []  # (text rows, k/v rows) each time the block's attention runs
    hook = block.attn.register_forward_hook(lambda mod, args, out: rows.append((args[0].shape[0], args[1].shape[0])))
    batched = session.ask_batch(questions, **kw)
    hook.remove()
    assert set(rows) == {(4, 1)}, f"4 questions should read one shared k/v row, saw (text rows, k/v rows) {rows}"
    assert batched == [session.ask(q, **kw) for q in questions]
    assert {i: kv[0].data_ptr() for i, kv in session.context.kv_cache.items()} == k_before


CHATML = (  # SmolLM2's template shape: the answer follows the generation prompt directly
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.mark.parametrize("template", ["vicuna", "chatml"])
def test_session_follow_ups_equal_fresh_calls_with_the_whole_conversation(tiny_model, template):
    model, processor = tiny_model
    if template == "chatml":
        processor.chat_template = CHATML
    kw = letters_only(processor) | {"max_new_tokens": 10}
    image = coloured(4, seed=11)
    session = open_image(model, processor, image, system="You look at pictures.")
    questions = ["What is it?", "And what else?", "Say more."]
    for turn, question in enumerate(questions):
        history = list(session.history)
        result = session.chat_stream(question, **kw)
        text = result.consume()
        fresh = infimm_hd.answer(
            model, processor, image, question, system="You look at pictures.", history=history, **kw
        )
        assert text == fresh, f"turn {turn}: session {text!r} != fresh call with the conversation {fresh!r}"
        if turn > 0:  # the previous turns' text cache was reused, not re-run
            previous = render_prompt(processor, questions[turn - 1], "You look at pictures.", history[:-1])
            previous_tokens = len(processor.tokenizer(previous, add_special_tokens=False)["input_ids"])
            # Vicuna renders " ASSISTANT: answer", a space the model did not generate: reuse stops at the prompt.
            # ChatML renders the answer right after the prompt, so the answer's tokens are reused too (all but the
            # last generated one, which generate never ran through the model).
            reused_answer = result.timings.reused_prompt_tokens - previous_tokens
            assert reused_answer >= (len(history[-1].answer) - 1 if template == "chatml" else 0), reused_answer
    assert [t.question for t in session.history] == questions
    session.reset()
    assert session.history == [] and session.chat(questions[0], **kw) == session.ask(questions[0], **kw)


def test_session_fork_continues_the_conversation_independently(tiny_model):
    model, processor = tiny_model
    kw = letters_only(processor) | {"max_new_tokens": 8}
    session = open_image(model, processor, coloured(4, seed=15))
    session.chat("What is it?", **kw)
    twin = session.fork()
    from_twin = twin.chat("And then?", **kw)
    assert len(session.history) == 1 and len(twin.history) == 2, "a fork's turn leaked into the original"
    assert session.chat("And then?", **kw) == from_twin
    assert twin.context is session.context, "a fork must share the encoded image"


def test_session_reuses_the_image_prefix_for_single_questions(tiny_model):
    model, processor = tiny_model
    session = open_image(model, processor, coloured(1, seed=12))
    result = session.stream("What is it?", max_new_tokens=3)
    result.consume()
    prompt = render_prompt(processor, "What is it?")
    before_image = processor.tokenizer(prompt[: prompt.index("<image>")], add_special_tokens=False)["input_ids"]
    assert result.timings.reused_prompt_tokens == len(before_image) + 1  # up to and including <image>
    assert result.timings.vision_s == 0 and result.timings.image_s == 0


def test_prefix_cache_crops_to_the_common_prefix(tiny_model):
    model, processor = tiny_model
    ids = torch.arange(3, 13)  # (10,)
    with torch.no_grad():
        out = model.language_model(input_ids=ids[None], use_cache=True)
    prefix = PrefixCache(ids=ids, cache=out.cache)
    cache, n = prefix.reuse_for(torch.cat([ids[:6], torch.tensor([99, 98])]))
    assert n == 6 and cache.get_seq_length() == 6 and prefix.cache.get_seq_length() == 10
    cache, n = prefix.reuse_for(ids)  # identical prompt: the last token must still run
    assert n == 9 and cache.get_seq_length() == 9
    assert prefix.reuse_for(torch.tensor([50, 51])) == (None, 0)
    assert common_prefix_length(torch.tensor([1, 2]), torch.tensor([1, 2, 3])) == 2


# -- the real LLM -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2():
    model, processor = infimm_hd.build_model("smollm2-135m", seed=0)
    randomize_gates(model, scale=0.05)  # the image matters, the text stays fluent
    return model, processor


@pytest.mark.real_llm
def test_smollm2_session_stream_and_batch_equal_fresh_answers(smollm2):
    model, processor = smollm2
    kw = {"max_new_tokens": 10}
    image, other_image = make_image(4, seed=13), make_image(1, seed=14)
    question, other_question = "What is in this picture?", "Describe it briefly."
    fresh = infimm_hd.answer(model, processor, image, question, **kw)
    other = infimm_hd.answer(model, processor, image, other_question, **kw)
    assert fresh.strip() and other.strip(), "empty answer from the real LLM"
    assert infimm_hd.stream(model, processor, image, question, **kw).consume() == fresh
    assert infimm_hd.answer_batch(model, processor, [image, other_image], [question, other_question], **kw) == [
        fresh,
        infimm_hd.answer(model, processor, other_image, other_question, **kw),
    ]

    calls = count_vision_forwards(model)
    session = open_image(model, processor, image)
    assert session.ask(question, **kw) == fresh
    assert session.ask_batch([question, other_question], **kw) == [fresh, other]
    first = session.chat(question, **kw)
    follow_up = session.chat_stream("What colours does it have?", **kw)
    second = follow_up.consume()
    assert calls == [5], f"the vision tower ran {len(calls)} times in one session ({calls} crops)"
    # SmolLM2's ChatML template puts the answer right after the prompt: the follow-up reuses the whole first turn.
    first_prompt = render_prompt(processor, question)
    assert follow_up.timings.reused_prompt_tokens > len(processor.tokenizer(first_prompt)["input_ids"])
    history = [(question, first.strip())]
    expected = infimm_hd.answer(model, processor, image, "What colours does it have?", history=history, **kw)
    assert second == expected, f"follow-up {second!r} != fresh call with the conversation {expected!r}"
