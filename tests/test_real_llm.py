"""Zero-gate identity with the real SmolLM2-135M-Instruct (offline GGUF): the model is its base LLM exactly."""

from __future__ import annotations

import pytest
import torch
from conftest import make_image

import infimm_hd
from infimm_hd.presets import load_smollm2

pytestmark = pytest.mark.real_llm


@pytest.fixture(scope="module")
def smol():
    model, processor = infimm_hd.build_model("smollm2-135m")
    bare, _ = load_smollm2()  # loaded again from the GGUF, independently of the model
    old = bare.get_input_embeddings().weight.shape[0]
    bare.resize_token_embeddings(model.get_input_embeddings().weight.shape[0], mean_resizing=False)
    with torch.no_grad():  # the two added tokens' rows, as the model initialised them
        bare.get_input_embeddings().weight[old:] = model.get_input_embeddings().weight[old:]
    return model, processor, bare.eval()


def chat(processor, question: str) -> str:
    messages = [{"role": "user", "content": f"<image>{question}"}]
    return processor.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@torch.no_grad()
def test_smollm2_zero_gates_same_logits_and_generation(smol):
    model, processor, bare = smol
    inputs = processor(text=[chat(processor, "What is in this picture?")], images=[[make_image(6, 0)]])
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 1
    ours = model(**inputs).logits
    ref = bare(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert (ours - ref).abs().max().item() <= 1e-5
    gen = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    gen_ref = bare.generate(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=16, do_sample=False
    )
    assert torch.equal(gen, gen_ref)
    answer = processor.decode(gen[0, inputs["input_ids"].shape[1] :])
    assert len(answer.strip()) > 0


@torch.no_grad()
def test_smollm2_one_gate_changes_only_after_the_image(smol):
    model, processor, _ = smol
    inputs = processor(text=[chat(processor, "Describe it.")], images=[[make_image(1, 1)]])
    before = model(**inputs).logits
    block = model.cross_attention_blocks()[model.config.cross_attention_layers[0]]
    try:
        block.attn_gate.data[:8] = 1.0
        after = model(**inputs).logits
    finally:
        block.attn_gate.data.zero_()
    pos = int((inputs["input_ids"][0] == model.config.image_token_id).nonzero())
    assert torch.equal(after[0, :pos], before[0, :pos])
    assert (after[0, pos:] - before[0, pos:]).abs().amax(-1).min() > 0
