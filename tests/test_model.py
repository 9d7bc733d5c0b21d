"""Model invariants on the tiny preset: zero-gate identity, cache = no cache, batch = single, gradients, errors."""

from __future__ import annotations

import io

import pytest
import torch
from conftest import bare_llm_copy, make_image, randomize_gates

import infimm_hd

PROMPT = "Q: <image>what is in the picture? A:"


def greedy_no_cache(model, inputs, steps: int) -> torch.Tensor:
    """Reference decoding: the full forward (ViT included) on the whole sequence at every step, no caches at all."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    for _ in range(steps):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            pixel_values=inputs.get("pixel_values"),
            image_grids=inputs.get("image_grids"),
            use_cache=False,
        ).logits
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
        mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    return ids


@torch.no_grad()
def test_zero_gates_reproduce_the_bare_llm(tiny):
    model, processor = tiny
    bare = bare_llm_copy(model)
    inputs = processor(text=[PROMPT, "no image here, just text"], images=[[make_image(4, 0)], []])
    ours = model(**inputs).logits
    ref = bare(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert torch.equal(ours, ref), f"max diff {(ours - ref).abs().max()}"
    gen = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    gen_ref = bare.generate(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=8, do_sample=False
    )
    assert torch.equal(gen, gen_ref)


@torch.no_grad()
def test_one_gate_changes_only_tokens_after_the_image(tiny):
    model, processor = tiny
    inputs = processor(text=["some words before <image> and after"], images=[[make_image(1, 0)]])
    before = model(**inputs).logits
    block = model.cross_attention_blocks()[model.config.cross_attention_layers[0]]
    block.attn_gate.data[0] = 0.5
    after = model(**inputs).logits
    pos = int((inputs["input_ids"][0] == model.config.image_token_id).nonzero())
    assert torch.equal(after[0, :pos], before[0, :pos]), "tokens before the image must not change"
    assert (after[0, pos:] - before[0, pos:]).abs().amax(-1).min() > 0, "every token from the image on must change"


@torch.no_grad()
def test_cached_generate_equals_no_cache_greedy_loop(tiny_with_gates):
    model, processor = tiny_with_gates
    inputs = processor(text=[PROMPT], images=[[make_image(6, 1)]])
    steps = 10
    cached = model.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    reference = greedy_no_cache(model, inputs, steps)
    assert torch.equal(cached, reference)


@torch.no_grad()
def test_batch_of_1_4_9_windows_equals_each_alone(tiny_with_gates):
    model, processor = tiny_with_gates
    prompts = ["<image>short?", "a longer question about <image> this one?", "Q: <image>x"]
    images = [[make_image(1, 2)], [make_image(4, 3)], [make_image(9, 4)]]
    batch = processor(text=prompts, images=images)
    assert batch["image_grids"].prod(-1).tolist() == [1, 4, 9]
    steps = 8
    out = model.generate(**batch, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    for i in range(3):
        alone = processor(text=[prompts[i]], images=[images[i]])
        ref = model.generate(**alone, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
        assert torch.equal(out[i, -steps:], ref[0, -steps:]), f"sample {i} differs when batched"


@pytest.mark.parametrize("immediate", [True, False])
@torch.no_grad()
def test_each_token_sees_only_the_latest_image(immediate):
    """Interleaved images: the first block's output after image 2 must not depend on image 1 (immediate mode).

    The block at layer 0 reads the token embeddings directly, so its output isolates the cross-attention rule from
    the LLM's own self-attention (which legitimately carries earlier text forward).
    """
    model, processor = infimm_hd.build_model(
        "tiny", cross_attention_layers=[0, 4], only_attend_immediate_media=immediate
    )
    randomize_gates(model)
    text = ["first <image> middle words <image> last words"]
    a, b, c = make_image(1, 5), make_image(4, 6), make_image(1, 7)
    outs = []
    hook = model.cross_attention_blocks()[0].register_forward_hook(lambda m, args, out: outs.append(out))
    base_inputs = processor(text=text, images=[[a, b]])
    model(**base_inputs)
    model(**processor(text=text, images=[[c, b]]))
    hook.remove()
    base, changed = outs
    ids = base_inputs["input_ids"][0]
    first, second = (ids == model.config.image_token_id).nonzero().flatten().tolist()
    assert torch.equal(changed[0, :first], base[0, :first]), "text before any image must not see images"
    assert (changed[0, first:second] - base[0, first:second]).abs().amax(-1).min() > 0, "image 1 must be seen"
    after_second_same = torch.equal(changed[0, second:], base[0, second:])
    assert after_second_same == immediate, "after image 2, image 1 is visible only when not immediate"


@torch.no_grad()
def test_vision_tower_and_kv_projection_run_once_per_prompt(tiny_with_gates):
    model, processor = tiny_with_gates
    calls = {"vision": 0, "to_kv": 0}
    hooks = [model.vision_tower.register_forward_hook(lambda *a: calls.__setitem__("vision", calls["vision"] + 1))]
    for block in model.cross_attention_blocks().values():
        hooks.append(block.attn.to_kv.register_forward_hook(lambda *a: calls.__setitem__("to_kv", calls["to_kv"] + 1)))
    inputs = processor(text=[PROMPT, PROMPT + " again"], images=[[make_image(4, 8)], [make_image(1, 9)]])
    model.generate(**inputs, max_new_tokens=12, min_new_tokens=12, do_sample=False, num_return_sequences=3, num_beams=3)
    for h in hooks:
        h.remove()
    assert calls["vision"] == 1, "the ViT must run once per generate call"
    assert calls["to_kv"] == len(model.config.cross_attention_layers), "each block projects k/v once per prompt"


@torch.no_grad()
def test_sampled_copies_share_the_prompt_context(tiny_with_gates):
    model, processor = tiny_with_gates
    inputs = processor(text=[PROMPT], images=[[make_image(4, 10)]])
    torch.manual_seed(0)
    shared = model.generate(**inputs, max_new_tokens=6, do_sample=True, num_return_sequences=3)
    dup = processor(text=[PROMPT] * 3, images=[[make_image(4, 10)]] * 3)
    torch.manual_seed(0)
    separate = model.generate(**dup, max_new_tokens=6, do_sample=True)
    assert torch.equal(shared, separate)


def test_gradients_reach_exactly_the_trainable_parameters(tiny_with_gates):
    model, processor = tiny_with_gates
    model.train()
    model.requires_grad_(False)
    trainable = set()
    for idx, block in model.cross_attention_blocks().items():
        block.requires_grad_(True)
        trainable |= {f"language_model.model.layers.{idx}.cross_attn.{n}" for n, _ in block.named_parameters()}
    inputs = processor(text=[PROMPT + " a cat"], images=[[make_image(4, 11)]])
    labels = inputs["input_ids"].clone()
    labels[labels == model.config.image_token_id] = -100
    loss = model(**inputs, labels=labels).loss
    loss.backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got == trainable, f"missing {sorted(trainable - got)[:5]}, unexpected {sorted(got - trainable)[:5]}"


def test_gradient_checkpointing_gives_the_same_gradients(tiny_with_gates):
    model, processor = tiny_with_gates
    model.train()
    inputs = processor(text=[PROMPT + " a cat"], images=[[make_image(4, 12)]])
    model.vision_tower.freeze(False)

    def grads():
        model.zero_grad()
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.activation_checkpointing_enable()
    ckpt = grads()
    assert plain.keys() == ckpt.keys()
    for n in plain:
        assert torch.allclose(plain[n], ckpt[n], atol=1e-6), n


def test_bad_inputs_fail_before_compute_with_clear_errors(tiny):
    model, processor = tiny
    img = make_image(1, 0)
    with pytest.raises(ValueError, match="1 <image> tokens but 2 images"):
        processor(text=[PROMPT], images=[[img, img]])
    inputs = processor(text=[PROMPT], images=[[img]])
    with pytest.raises(ValueError, match="2 <image> tokens .* but 1 images"):
        ids = torch.cat([inputs["input_ids"], torch.tensor([[model.config.image_token_id]])], 1)
        model(input_ids=ids, pixel_values=inputs["pixel_values"], image_grids=inputs["image_grids"])
    with pytest.raises(ValueError, match="over the configured maximum"):
        model(input_ids=inputs["input_ids"], pixel_values=torch.zeros(26, 3, 448, 448), image_grids=[[5, 5]])
    with pytest.raises(ValueError, match="holds 3 crops"):
        model(
            input_ids=inputs["input_ids"],
            pixel_values=inputs["pixel_values"][:1].repeat(3, 1, 1, 1),
            image_grids=inputs["image_grids"],
        )
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=inputs["input_ids"])
    with pytest.raises(ValueError, match="not an image or corrupt"):
        processor(text=[PROMPT], images=[[b"not an image at all"]])
    with pytest.raises(ValueError, match="zero size"):
        processor(text=[PROMPT], images=[[torch.zeros(0, 10, 3)]])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert processor(text=[PROMPT], images=[[buf.getvalue()]])["pixel_values"].shape[0] == 2


@torch.no_grad()
def test_text_only_prompts_skip_vision(tiny_with_gates):
    model, processor = tiny_with_gates
    bare = bare_llm_copy(model)
    inputs = processor(text=["hello there"])
    assert "pixel_values" not in inputs
    assert torch.equal(
        model.generate(**inputs, max_new_tokens=5, do_sample=False),
        bare.generate(**inputs, max_new_tokens=5, do_sample=False),
    )


def test_randomized_gates_make_the_image_matter(tiny):
    model, processor = tiny
    randomize_gates(model)
    with torch.no_grad():
        a = model(**processor(text=[PROMPT], images=[[make_image(1, 0)]])).logits
        b = model(**processor(text=[PROMPT], images=[[make_image(1, 1)]])).logits
    assert not torch.allclose(a, b)


@torch.no_grad()
def test_generate_without_text_cache_equals_cached(tiny_with_gates):
    model, processor = tiny_with_gates
    inputs = processor(text=[PROMPT], images=[[make_image(4, 13)]])
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert torch.equal(model.generate(**inputs, **kw), model.generate(**inputs, use_cache=False, **kw))


@torch.no_grad()
def test_bfloat16_model_generates_like_fp32_on_tiny(tiny_with_gates):
    model, processor = tiny_with_gates
    inputs = processor(text=[PROMPT], images=[[make_image(1, 14)]])
    fp32 = model(**inputs).logits
    bf16 = model.to(torch.bfloat16)(**inputs).logits.float()
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    assert (bf16 - fp32).abs().max() < 0.1 * fp32.abs().max(), "bf16 logits drift too far from fp32"


@torch.no_grad()
def test_key_count_matches_the_tiling_plan(tiny):
    """The keys the model packs for an image are exactly what its tiling plan reports."""
    model, processor = tiny
    image = make_image(6, 15)
    inputs = processor(text=[PROMPT], images=[[image]])
    from infimm_hd.hires import plan_tiles

    plan = plan_tiles(image.width, image.height, max_windows=processor.image_processor.max_windows)
    context = model.encode_media(inputs["input_ids"], inputs["pixel_values"], inputs["image_grids"])
    assert context.media.shape[1] == plan.cross_attention_keys(model.config.vision_config.tokens_per_crop)
    assert int((context.key_media_index == 1).sum()) == plan.cross_attention_keys(65)


def test_image_sample_index_must_match_the_image_tokens(tiny):
    model, processor = tiny
    inputs = processor(text=[PROMPT, "text only"], images=[[make_image(1, 0)], []])
    with pytest.raises(ValueError, match="image_sample_index"):
        model(**{**inputs, "image_sample_index": torch.tensor([1])})


def test_demo_runs_on_the_tiny_preset(capsys):
    from infimm_hd.demo import main

    main(["--preset", "tiny", "--max-new-tokens", "3"])
    out = capsys.readouterr().out
    assert "2x3 windows + thumbnail = 7 crops" in out
    assert "zero-gate check: max |logits(model) - logits(bare LLM)| = 0.00e+00" in out


@torch.no_grad()
def test_thumbnail_only_images_mix_with_windowed_ones(tiny_with_gates):
    """Grid (0, 0) = thumbnail only: keys are exactly the tower's thumbnail tokens, and a batch mixing such images
    with windowed ones gives each prompt the logits it gets alone."""
    model, processor = tiny_with_gates
    image = make_image(9, 11)
    alone = processor(text=[PROMPT], images=[[image]], max_windows=0)
    assert alone["image_grids"].tolist() == [[0, 0]] and alone["pixel_values"].shape[0] == 1
    context = model.encode_media(alone["input_ids"], alone["pixel_values"], alone["image_grids"])
    assert torch.equal(context.media[0], model.vision_tower(alone["pixel_values"])[0])  # zero position embedding

    windowed = processor(text=["<image>other"], images=[[make_image(4, 12)]])
    mixed = {
        "input_ids": None,
        "pixel_values": torch.cat([alone["pixel_values"], windowed["pixel_values"]]),
        "image_grids": torch.cat([alone["image_grids"], windowed["image_grids"]]),
    }
    texts = processor.tokenizer([PROMPT, "<image>other"], padding=True, return_tensors="pt")
    mixed["input_ids"], mixed["attention_mask"] = texts["input_ids"], texts["attention_mask"]
    logits = model(**mixed).logits
    ref = model(**alone).logits
    n = alone["input_ids"].shape[1]
    assert torch.allclose(logits[0, -n:], ref[0], atol=1e-5), (logits[0, -n:] - ref[0]).abs().max()


def test_set_window_size_round_trips_through_save(tmp_path, tiny):
    """Stage 1 trains at 224: the tower, config.window_size and the vision config move together and reload."""
    model, processor = tiny
    model.set_window_size(224)
    processor.image_processor.window_size = 224
    inputs = processor(text=[PROMPT], images=[[make_image(4, 1)]], max_windows=0)
    assert inputs["pixel_values"].shape[-1] == 224
    model.save_pretrained(tmp_path)
    again = infimm_hd.InfiMMHDForConditionalGeneration.from_pretrained(tmp_path)
    assert again.config.window_size == 224 and again.vision_tower.image_size == 224
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, again(**inputs).logits)


@torch.no_grad()
def test_generation_stops_at_end_of_chunk(tiny):
    """The paper's template ends answers with <|endofchunk|>: generate must stop there, as at the LLM's EOS."""
    model, processor = tiny
    eoc = model.config.end_of_chunk_token_id
    model.get_output_embeddings().bias = torch.nn.Parameter(torch.zeros(model.config.text_config.vocab_size))
    model.get_output_embeddings().bias[eoc] = 1e4  # every step's argmax is <|endofchunk|>
    inputs = processor(text=[PROMPT], images=[[make_image(1, 0)]])
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 1 and out[0, -1] == eoc
