"""`sftdata train`: the data reaches the model untouched, the loss is the masked cross-entropy,
training lowers it, refusals come before any step, and padding-free keeps conversations apart.

Everything runs on CPU with `builtin:tiny-llama3` and tiny prepared folders built here from the
real Llama-3 tokenizer (the pipeline that writes shards is tested elsewhere).
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from sftdata.constants import IGNORE_INDEX
from sftdata.planning.collator import ShardCollator
from sftdata.training.command import train_cmd
from sftdata.training.launcher import (
    DATA_MANIFEST_NAME,
    LOSS_HISTORY_NAME,
    TrainOptions,
    build_trainer,
    resolve_settings,
    resolve_tokenizer,
)
from sftdata.training.tiny_model import TINY_SPEC

REPO = Path(__file__).resolve().parents[2]
STEPS = 16  # enough for the loss of a random model to fall from ~11.8 to ~2.5 at lr 1e-2
CONVS = [
    ("Hi", "Hello!"),
    ("What is 2+2?", "4."),
    ("Name a colour.", "Blue, like the sky."),
    ("Say yes.", "Yes."),
]


# ------------------------------------------------------------------------------------------ fixtures
def encode_conversation(tok, user: str, reply: str) -> tuple[list[int], list[int]]:
    """A Llama-3-rendered user/assistant exchange; only the reply and its <|eot_id|> are trained."""
    enc = tok.encode_text
    prompt = [tok.bos_id, tok.start_header_id, *enc("user"), tok.end_header_id, *enc("\n\n" + user), tok.eot_id,
              tok.start_header_id, *enc("assistant"), tok.end_header_id, *enc("\n\n")]
    answer = [*enc(reply), tok.eot_id]
    return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer


def make_prepared(path: Path, tok, convs=CONVS, *, packs: list[list[int]] | None = None, train_all=(),
                  **manifest_tokenizer) -> Path:
    """A prepared folder: `save_to_disk` shards plus a manifest; `packs` groups conversations per row;
    conversations listed in `train_all` are labelled on every token, their first one included."""
    from datasets import Dataset, Features, List, Value

    encoded = [encode_conversation(tok, u, r) for u, r in convs]
    encoded = [(ids, list(ids) if i in train_all else labels) for i, (ids, labels) in enumerate(encoded)]
    groups = packs or [[i] for i in range(len(convs))]
    cols: dict[str, list] = {"id": [], "input_ids": [], "labels": []}
    feats = {"id": Value("string"), "input_ids": List(Value("int32")), "labels": List(Value("int32"))}
    if packs:
        cols.update(position_ids=[], seq_lengths=[])
        feats.update(position_ids=List(Value("int32")), seq_lengths=List(Value("int32")))
    for n, group in enumerate(groups):
        cols["id"].append(f"row-{n}")
        cols["input_ids"].append([t for i in group for t in encoded[i][0]])
        cols["labels"].append([t for i in group for t in encoded[i][1]])
        if packs:
            cols["position_ids"].append([p for i in group for p in range(len(encoded[i][0]))])
            cols["seq_lengths"].append([len(encoded[i][0]) for i in group])
    Dataset.from_dict(cols, features=Features(feats)).save_to_disk(str(path))
    tokenizer = {"spec": "builtin:llama3", "fingerprint": tok.fingerprint, "vocab_size": tok.vocab_size,
                 "bos_id": tok.bos_id, "eot_id": tok.eot_id, "pad_id": tok.pad_id, **manifest_tokenizer}
    manifest = {"format": "sftdata-shards", "format_version": 1, "tokenizer": tokenizer, "shards": [],
                "totals": {"rows": len(groups), "tokens": sum(len(x) for x in cols["input_ids"])}}
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return path


def options(data: Path, out: Path, **kw) -> TrainOptions:
    kw.setdefault("skip_audit", True)
    return TrainOptions(data_dir=data, model=TINY_SPEC, output_dir=out, max_steps=1, **kw)


def invoke(*args: str):
    return CliRunner().invoke(train_cmd, [str(a) for a in args])


def fake_audit(monkeypatch, ok: bool, summary: str = "") -> list:
    """Install a stand-in `sftdata.audit` module; returns the list of paths it was called with."""
    calls: list = []

    def run_audit(path, workers=None):
        assert workers == 1, "the trainer's process audits without forking"
        calls.append(Path(path))
        return types.SimpleNamespace(ok=ok, summary_text=lambda: summary)

    monkeypatch.setitem(sys.modules, "sftdata.audit", types.SimpleNamespace(run_audit=run_audit))
    return calls


def conversation_ce(model, ids: list[int], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(logits, summed cross-entropy over trained positions, their count) for one conversation alone."""
    logits = model(input_ids=torch.tensor([ids])).logits[0]
    target = torch.tensor(labels[1:])
    keep = target != IGNORE_INDEX
    return logits, F.cross_entropy(logits[:-1][keep], target[keep], reduction="sum"), int(keep.sum())


# --------------------------------------------------------------------------------------------- tests
def test_trainer_loss_is_masked_cross_entropy_and_batch_is_untouched(tok, tmp_path, monkeypatch):
    from datasets import load_from_disk

    data = make_prepared(tmp_path / "data", tok)
    calls = fake_audit(monkeypatch, ok=True)
    trainer = build_trainer(options(data, tmp_path / "out", batch_size=4, skip_audit=False)).trainer
    assert calls == [data]
    batch = next(iter(trainer.get_train_dataloader()))

    rows = sorted((r["input_ids"], r["labels"]) for r in load_from_disk(str(data)))
    seen = []
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        n = int(mask.sum())
        assert mask[:n].all() and (ids[n:] == tok.pad_id).all() and (labels[n:] == IGNORE_INDEX).all()
        seen.append((ids[:n].tolist(), labels[:n].tolist()))
    assert sorted(seen) == rows
    assert len({len(r[0]) for r in rows}) > 1  # rows differ in length, so padding was exercised

    model = trainer.model
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    target = batch["labels"][:, 1:]  # the model predicts token t+1 from position t
    keep = target != IGNORE_INDEX
    assert int(keep.sum()) == sum(sum(x != IGNORE_INDEX for x in lab) for _, lab in rows)
    by_hand = F.cross_entropy(logits[:, :-1][keep], target[keep])
    torch.testing.assert_close(loss, by_hand, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def trained(tok, tmp_path_factory):
    """One short CLI run (16 steps, two per pass over 4 rows), shared by the loss and output tests."""
    root = tmp_path_factory.mktemp("trained")
    data = make_prepared(root / "data", tok)
    out = root / "out"
    result = invoke(data, "--model", TINY_SPEC, "--output-dir", out, "--max-steps", STEPS, "--lr", "1e-2",
                    "--batch-size", 2, "--seed", 0, "--skip-audit",
                    "--set", "logging_steps=1", "--set", "save_strategy=no", "--set", "lr_scheduler_type=constant")
    assert result.exit_code == 0, result.output
    return data, out, result.output


def test_short_training_lowers_the_loss(trained):
    _, out, output = trained
    history = json.loads((out / LOSS_HISTORY_NAME).read_text())
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))
    first, last = history[0]["loss"], history[-1]["loss"]
    assert last < 0.5 * first, (first, last)
    assert "{'loss': " in output and f"trained {STEPS} steps" in output  # loss reaches the terminal


def test_output_dir_has_model_tokenizer_state_and_manifest_copy(trained):
    from transformers import AutoModelForCausalLM

    data, out, _ = trained
    manifest = json.loads((data / "manifest.json").read_text())
    assert (out / DATA_MANIFEST_NAME).read_bytes() == (data / "manifest.json").read_bytes()
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS and any("loss" in e for e in state["log_history"])
    assert AutoModelForCausalLM.from_pretrained(out).get_input_embeddings().num_embeddings == 128256
    # The saved tokenizer is found with the model and passes the fingerprint check for the same data.
    _, source = resolve_tokenizer(str(out), manifest)
    assert source == f"the tokenizer saved with {out}"


def test_refuses_model_whose_vocabulary_is_too_small(tok, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    model_dir = tmp_path / "small"
    LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(model_dir)
    out = tmp_path / "out"
    result = invoke(make_prepared(tmp_path / "data", tok), "--model", model_dir, "--output-dir", out, "--skip-audit")
    assert result.exit_code != 0
    assert "vocabulary" in result.output and "1000" in result.output
    assert not out.exists()


def test_refuses_model_tokenizer_with_another_fingerprint(tok, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from sftdata.tokenizer import _convert_builtin

    model_dir = tmp_path / "model"  # a model saved with the built-in tokenizer ...
    LlamaForCausalLM(LlamaConfig(vocab_size=128256, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, tie_word_embeddings=True)).save_pretrained(model_dir)
    for f in _convert_builtin().glob("*.json"):
        shutil.copy(f, model_dir / f.name)
    other = "sha256:" + "0" * 64  # ... and shards made with another tokenizer
    data = make_prepared(tmp_path / "data", tok, fingerprint=other)
    out = tmp_path / "out"
    result = invoke(data, "--model", model_dir, "--output-dir", out, "--skip-audit")
    assert result.exit_code != 0
    assert "fingerprint mismatch" in result.output and other in result.output and tok.fingerprint in result.output
    assert not out.exists()


def test_refuses_folder_without_manifest(tok, tmp_path):
    data = make_prepared(tmp_path / "data", tok)
    (data / "manifest.json").unlink()
    out = tmp_path / "out"
    result = invoke(data, "--model", TINY_SPEC, "--output-dir", out, "--skip-audit")
    assert result.exit_code != 0
    assert "manifest.json" in result.output and "not a prepared" in result.output
    assert not out.exists()


def test_refuses_shards_that_fail_the_audit(tok, tmp_path, monkeypatch):
    data = make_prepared(tmp_path / "data", tok)
    fake_audit(monkeypatch, ok=False, summary="label leak: 2 rows train on user text")
    out = tmp_path / "out"
    result = invoke(data, "--model", TINY_SPEC, "--output-dir", out)
    assert result.exit_code != 0
    assert "audit" in result.output and "label leak: 2 rows" in result.output
    assert not out.exists()
    monkeypatch.setitem(sys.modules, "sftdata.audit", None)  # module missing: an error, unless skipped
    result = invoke(data, "--model", TINY_SPEC, "--output-dir", out)
    assert result.exit_code != 0 and "--skip-audit" in result.output
    assert not out.exists()


def test_unknown_settings_are_named(tmp_path):
    result = invoke(tmp_path, "--model", TINY_SPEC, "--output-dir", tmp_path / "out",
                    "--set", "learning_rat=0.1", "--set", "bogus_key=1", "--set", "seed=3")
    assert result.exit_code != 0
    assert "learning_rat" in result.output and "bogus_key" in result.output and "seed" not in result.output


def test_settings_precedence_and_example_config(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("learning_rate: 0.5\nper_device_train_batch_size: 8\nwarmup_steps: 3\n")
    settings, padding_free = resolve_settings(TrainOptions(
        data_dir=tmp_path, model=TINY_SPEC, output_dir=tmp_path / "o", config_file=cfg, batch_size=2,
        overrides=["learning_rate=1e-3", "warmup_steps=5", "padding_free=true"]))
    assert settings["learning_rate"] == 0.001 and settings["per_device_train_batch_size"] == 2
    assert settings["warmup_steps"] == 5 and padding_free is True
    assert settings["dataset_kwargs"] == {"skip_prepare_dataset": True} and settings["max_length"] is None
    settings, _ = resolve_settings(TrainOptions(data_dir=tmp_path, model=TINY_SPEC, output_dir=tmp_path / "o",
                                                config_file=REPO / "pipelines" / "train-tiny.yaml"))
    assert settings["max_steps"] > 0
    result = invoke(tmp_path, "--model", TINY_SPEC, "--output-dir", tmp_path / "o", "--set", "max_length=512")
    assert result.exit_code != 0 and "max_length" in result.output


def test_collator_restarts_positions_from_seq_lengths():
    rows = [{"input_ids": [5, 6, 7, 8, 9], "labels": [-100, 6, 7, 8, 9], "seq_lengths": [3, 2]},
            {"input_ids": [1, 2], "labels": [1, 2]}]
    batch = ShardCollator(pad_id=0, padding_free=True, pad_to_multiple_of=8)(rows)
    assert "attention_mask" not in batch
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 0]]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 1, 2, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9, -100, 2, -100]]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_rows_train_like_separate_conversations(tok, tmp_path, attn):
    # The second conversation's first token is labelled: only the collator keeps it from being
    # predicted from the end of the first conversation.
    data = make_prepared(tmp_path / "data", tok, CONVS[:3], packs=[[0, 1], [2]], train_all={1})
    trainer = build_trainer(options(data, tmp_path / "out", batch_size=2,
                                    overrides=[f"model_init_kwargs={{attn_implementation: {attn}}}"])).trainer
    assert trainer.model.config._attn_implementation == attn
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    pos, ids, labels = batch["position_ids"][0], batch["input_ids"][0], batch["labels"][0]
    assert (labels[pos == 0] == IGNORE_INDEX).all()

    model, starts = trainer.model, (pos == 0).nonzero().flatten().tolist() + [len(pos)]
    total, count = torch.tensor(0.0), 0
    with torch.no_grad():
        packed_logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        for a, b in zip(starts, starts[1:], strict=False):
            assert pos[a:b].tolist() == list(range(b - a))
            alone, ce, n = conversation_ce(model, ids[a:b].tolist(), labels[a:b].tolist())
            torch.testing.assert_close(packed_logits[a:b], alone, rtol=1e-4, atol=1e-4)  # no cross-attention
            total, count = total + ce, count + n
        loss = trainer.compute_loss(model, dict(batch))
    assert len(starts) == 4  # three conversations in one row
    torch.testing.assert_close(loss, total / count, rtol=1e-5, atol=1e-5)


def test_padding_free_flag_matches_padded_loss(tok, tmp_path):
    data = make_prepared(tmp_path / "data", tok, CONVS[:2])
    losses = {}
    for free in (False, True):
        trainer = build_trainer(options(data, tmp_path / "out", batch_size=2, padding_free=free, seed=7)).trainer
        batch = next(iter(trainer.get_train_dataloader()))
        assert ("attention_mask" in batch) is not free and ("position_ids" in batch) is free
        with torch.no_grad():
            losses[free] = trainer.compute_loss(trainer.model, dict(batch))
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-5, atol=1e-5)
