"""`sftdata.integrations.trl_collator.DataCollatorForCompletionOnlyLM`: the old TRL guide's collator, loud and Llama-3 aware."""

from __future__ import annotations

import copy
import re

import pytest

from sftdata.config import Settings
from sftdata.constants import IGNORE_INDEX
from sftdata.integrations.trl_collator import LLAMA3_INSTRUCTION, LLAMA3_RESPONSE, DataCollatorForCompletionOnlyLM
from sftdata.process.record import RecordProcessor
from tests.synth import generate_records

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def hf(tokenizer):
    return tokenizer.hf


@pytest.fixture(scope="module")
def pipeline_rows(tokenizer):
    """(input_ids, labels) of generated records through the pipeline; single- and multi-turn, with tools."""
    proc = RecordProcessor(Settings(template="llama3.2"), tokenizer)
    rows = []
    for i, rec in enumerate(generate_records(120, seed=17, tools=True)):
        rec = copy.deepcopy(rec)
        for m in rec["messages"]:
            m.pop("weight", None)  # a collator cannot know weights
        enc = proc.encode(proc.conversation(rec, "t", i))
        rows.append((enc.input_ids.tolist(), enc.labels.tolist()))
    return rows


def unpadded(batch, j: int) -> tuple[list[int], list[int]]:
    keep = batch["attention_mask"][j].bool()
    return batch["input_ids"][j][keep].tolist(), batch["labels"][j][keep].tolist()


def trained_text(hf, ids, labels) -> str:
    return hf.decode([i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX])


@pytest.mark.parametrize("form", ["strings", "token_ids", "response_only"])
def test_llama3_templates_give_pipeline_labels(form, hf, pipeline_rows):
    if form == "token_ids":
        args = ([128006, 78191, 128007, 271], [128006, 882, 128007, 271])
    else:
        args = (LLAMA3_RESPONSE, LLAMA3_INSTRUCTION if form == "strings" else None)
    collator = DataCollatorForCompletionOnlyLM(*args, tokenizer=hf)
    turns = set()
    for k in range(0, len(pipeline_rows), 8):
        rows = pipeline_rows[k:k + 8]
        batch = collator([{"input_ids": ids} for ids, _ in rows])
        assert batch["input_ids"].dtype == torch.long and set(batch) == {"input_ids", "attention_mask", "labels"}
        for j, (ids, labels) in enumerate(rows):
            got_ids, got_labels = unpadded(batch, j)
            assert got_ids == ids and got_labels == labels, f"row {k + j}"
            turns.add(min(sum(ids[n:n + 2] == [128006, 78191] for n in range(len(ids))), 3))  # assistant turns
    assert turns == {1, 2, 3}  # single- and multi-turn rows were compared


def test_chatml_templates_on_llama3_data_raise_clear_error(hf, pipeline_rows):
    collator = DataCollatorForCompletionOnlyLM("<|im_start|>assistant\n", "<|im_start|>user\n", tokenizer=hf)
    with pytest.raises(ValueError) as exc:
        collator([{"input_ids": pipeline_rows[0][0]}])
    msg = str(exc.value)
    assert "'<|im_start|>assistant\\n'" in msg and "example 0" in msg and "<|begin_of_text|>" in msg
    assert "looks like a ChatML template but the data is Llama-3 formatted (starts with <|begin_of_text|>)" in msg
    assert repr(LLAMA3_RESPONSE) in msg


@pytest.mark.parametrize(("template", "kind"), [("[/INST]", "[INST]"), ("### Response:", "Alpaca-style")])
def test_other_format_hints(template, kind, hf, pipeline_rows):
    with pytest.raises(ValueError, match=rf"looks like an? {re.escape(kind)}.*Llama-3 formatted"):
        DataCollatorForCompletionOnlyLM(template, tokenizer=hf)([{"input_ids": pipeline_rows[0][0]}])


def test_missing_response_names_the_example(hf, pipeline_rows):
    collator = DataCollatorForCompletionOnlyLM(LLAMA3_RESPONSE, tokenizer=hf)
    plain = hf.encode("Just some prose without any chat structure.", add_special_tokens=False)
    with pytest.raises(ValueError, match=r"example 1 of the batch .*'Just some prose.*no <\|start_header_id\|>"):
        collator([{"input_ids": pipeline_rows[0][0]}, {"input_ids": plain}])


def test_mixed_formats_refused_at_init(hf):
    with pytest.raises(ValueError, match="different chat formats"):
        DataCollatorForCompletionOnlyLM(LLAMA3_RESPONSE, "<|im_start|>user\n", tokenizer=hf)
    with pytest.raises(ValueError, match="mlm"):
        DataCollatorForCompletionOnlyLM(LLAMA3_RESPONSE, tokenizer=hf, mlm=True)


@pytest.mark.parametrize("template", ["### Answer:", " ### Answer:", "\n### Answer:"])
@pytest.mark.parametrize("before", ["### Question: why?\n", "### Question: why?\n ", "Why.\n", "Why: "])
def test_string_templates_match_whatever_the_left_context(template, before, hf):
    ids = hf.encode(f"{before}### Answer: because.", add_special_tokens=True)
    labels = DataCollatorForCompletionOnlyLM(template, tokenizer=hf).labels_for(ids)
    assert trained_text(hf, ids, labels) == " because."


def test_instruction_template_ends_the_span(hf):
    """The span ends where the next template starts in token space: "!\\n" is one token, so it is trained."""
    text = "### Human: hi.\n### Assistant: Hello!\n### Human: more?\n### Assistant: No."
    ids = hf.encode(text, add_special_tokens=True)
    collator = DataCollatorForCompletionOnlyLM("\n### Assistant:", "\n### Human:", tokenizer=hf)
    assert trained_text(hf, ids, collator.labels_for(ids)) == " Hello!\n No."


def test_header_newline_absorbed_by_longer_whitespace(hf):
    """Content that starts with whitespace merges with the header's \\n\\n; the span starts after it."""
    text = f"<|begin_of_text|>{LLAMA3_INSTRUCTION}Hi<|eot_id|>{LLAMA3_RESPONSE}\n  Yo<|eot_id|>"
    ids = hf.encode(text, add_special_tokens=False)
    assert 271 not in ids[-5:]  # no separate "\n\n" token after the assistant header
    labels = DataCollatorForCompletionOnlyLM(LLAMA3_RESPONSE, tokenizer=hf).labels_for(ids)
    assert trained_text(hf, ids, labels) == "  Yo<|eot_id|>"


def test_padding_free_and_left_padding(hf, pipeline_rows):
    rows = pipeline_rows[:3]
    examples = [{"input_ids": ids} for ids, _ in rows]
    flat = DataCollatorForCompletionOnlyLM(LLAMA3_RESPONSE, tokenizer=hf, padding_free=True)(examples)
    assert set(flat) == {"input_ids", "labels", "position_ids"}
    want_labels = sum(([IGNORE_INDEX] + labels[1:] for _, labels in rows), [])
    assert flat["input_ids"][0].tolist() == sum((ids for ids, _ in rows), [])
    assert flat["labels"][0].tolist() == want_labels
    assert flat["position_ids"][0].tolist() == sum((list(range(len(ids))) for ids, _ in rows), [])

    left = copy.copy(hf)
    left.padding_side = "left"
    batch = DataCollatorForCompletionOnlyLM(LLAMA3_RESPONSE, tokenizer=left, pad_to_multiple_of=64)(examples)
    assert batch["input_ids"].shape[1] % 64 == 0 and batch["attention_mask"][:, -1].all()
    for j, (ids, labels) in enumerate(rows):
        assert unpadded(batch, j) == (ids, labels)


def test_works_as_sft_trainer_data_collator(tmp_path):
    """One optimizer step of TRL's SFTTrainer on a tiny random Llama, with the collator doing the labels."""
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    from sftdata.stages.render import official_template_text
    from sftdata.tokenizer import _convert_builtin

    tok = AutoTokenizer.from_pretrained(str(_convert_builtin()))  # a private copy: the trainer may touch it
    tok.chat_template = official_template_text("llama3.2")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128256, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, bos_token_id=128000,
                                         eos_token_id=128009, pad_token_id=128004))
    data = Dataset.from_list([
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]},
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                      {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}]}])
    collator = DataCollatorForCompletionOnlyLM(LLAMA3_RESPONSE, LLAMA3_INSTRUCTION, tokenizer=tok)
    batches = []

    def spy(examples):
        batches.append(collator(examples))
        return batches[-1]

    args = SFTConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to="none",
                     bf16=False, save_strategy="no", use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, data_collator=spy)
    result = trainer.train()
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
    texts = sorted(trained_text(tok, *unpadded(batches[0], j)) for j in range(2))
    assert texts == ["4<|eot_id|>6<|eot_id|>", "Hello there.<|eot_id|>"]
