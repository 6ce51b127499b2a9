"""The audit's rules on agentic rows: `<|eom_id|>`-closed trained turns and `<|python_tag|>` in
trained content pass, and every kind of tampering on such rows is still caught, naming the row.

Rows come from the pipeline's own renderer and encoder over generated agentic records (built-in
tools in effect, so every tool-call turn closes with `<|eom_id|>`), checked in memory by the same
rule code `sftdata audit` runs.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pytest

from sftdata.audit.arrays import iter_slices
from sftdata.audit.report import Violations
from sftdata.audit.rules import check_slice
from sftdata.audit.slice_view import RuleContext
from sftdata.constants import IGNORE_INDEX
from sftdata.stages.encode import PieceEncoder
from sftdata.stages.render import Llama3Renderer
from sftdata.stages.validate import to_conversation
from tests.synth_agentic import generate_agentic_records

DATE = "26 Jul 2024"
BUILTIN = ("brave_search", "wolfram_alpha", "code_interpreter")


def check(tok, rows: list[dict]) -> Violations:
    ctx = RuleContext(tok.bos_id, tok.start_header_id, tok.end_header_id, (tok.eot_id, tok.eom_id),
                      tuple(tok.encode_text("\n\n")), tok.vocab_size, tok.decode)
    sink = Violations()
    schema = pa.schema([("id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])
    for first, cols in iter_slices(pa.Table.from_pylist(rows, schema=schema), False, None):
        check_slice(cols, first, "mem", ctx, sink, False)
    return sink


@pytest.fixture(scope="module", params=[True, False], ids=["tools-in-user", "tools-in-system"])
def rows(request, tokenizer) -> list[dict]:
    renderer, encoder = Llama3Renderer("llama3.1", DATE, tools_in_user_message=request.param), PieceEncoder(
        tokenizer, 1 << 20)
    out = []
    for rec in generate_agentic_records(80, seed=7, hostile=True):
        conv = to_conversation(rec, source="t", line=1, template="llama3.1", builtin_default=BUILTIN,
                               tools_in_user_message=request.param)
        enc = encoder.encode(renderer.render(conv))
        out.append({"id": conv.id, "input_ids": enc.input_ids.tolist(), "labels": enc.labels.tolist()})
    return out


def test_eom_closed_and_python_tag_turns_pass(rows, tokenizer):
    sink = check(tokenizer, rows)
    assert not sink.counts, sink.items[:3]
    trained = [lab for r in rows for lab in r["labels"] if lab != IGNORE_INDEX]
    assert trained.count(tokenizer.eom_id) > 40 and trained.count(tokenizer.python_tag_id) > 40


def _target(tok, rows) -> tuple[int, int, int]:
    """(row, position of a trained <|python_tag|>, position of the trained <|eom_id|> closing its turn),
    in a row whose turn after that <|eom_id|> is an ipython result."""
    for k, r in enumerate(rows):
        ids, labs = r["input_ids"], r["labels"]
        for p, (i, lab) in enumerate(zip(ids, labs, strict=True)):
            if i == tok.python_tag_id and lab == i:
                eom = ids.index(tok.eom_id, p)
                if labs[eom] == tok.eom_id and tok.decode(ids[eom + 2: eom + 4]).startswith("ipython"):
                    return k, p, eom
    raise AssertionError("no trained built-in call followed by a result")


def _untrained_call(tok, ids, labs) -> int:
    return next(p for p, (i, lab) in enumerate(zip(ids, labs, strict=True))
                if i == tok.python_tag_id and lab == IGNORE_INDEX)


# name: (rules that must fail, change(tok, ids, labels, python_tag position, eom position)); all on that row
TAMPERING: dict[str, tuple[set[str], Callable]] = {
    # the closing token's own rule (sftdata/audit/pitfalls.py)
    "untrain_eom": ({"eot_trained"}, lambda tok, ids, lab, tag, eom: lab.__setitem__(eom, IGNORE_INDEX)),
    "untrain_python_tag": ({"assistant_turn_whole"},
                           lambda tok, ids, lab, tag, eom: lab.__setitem__(tag, IGNORE_INDEX)),
    "untrain_call_text": ({"assistant_turn_whole"},
                          lambda tok, ids, lab, tag, eom: lab.__setitem__(tag + 1, IGNORE_INDEX)),
    # tool-result content is prompt content: its own rule
    "train_result_after_eom": ({"prompt_trained"}, lambda tok, ids, lab, tag, eom: lab.__setitem__(
        ids.index(tok.end_header_id, eom) + 2, ids[ids.index(tok.end_header_id, eom) + 2])),
    "train_header_after_eom": ({"trained_outside_assistant"},
                               lambda tok, ids, lab, tag, eom: lab.__setitem__(eom + 1, ids[eom + 1])),
    "train_system_header": ({"prompt_trained"},
                            lambda tok, ids, lab, tag, eom: lab.__setitem__(5, ids[5])),
    "eom_label_says_eot": ({"label_matches_input"},
                           lambda tok, ids, lab, tag, eom: lab.__setitem__(eom, tok.eot_id)),
    "shift_labels": ({"label_matches_input"},
                     lambda tok, ids, lab, tag, eom: lab.__setitem__(slice(None), lab[1:] + [IGNORE_INDEX])),
    "drop_eom": ({"well_formed_turns"}, lambda tok, ids, lab, tag, eom: (ids.pop(eom), lab.pop(eom))),
    "text_after_eom": ({"well_formed_turns"},
                       lambda tok, ids, lab, tag, eom: (ids.insert(eom + 1, tok.encode_text("x")[0]),
                                                        lab.insert(eom + 1, IGNORE_INDEX))),
    "second_eom_in_call": ({"well_formed_turns"},
                           lambda tok, ids, lab, tag, eom: (ids.insert(tag + 1, tok.eom_id),
                                                            lab.insert(tag + 1, tok.eom_id))),
    "mask_whole_row": ({"row_has_trained_tokens"},
                       lambda tok, ids, lab, tag, eom: lab.__setitem__(slice(None), [IGNORE_INDEX] * len(lab))),
}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_each_tampering_on_an_agentic_row_is_caught(name, rows, tokenizer):
    rules, change = TAMPERING[name]
    k, tag, eom = _target(tokenizer, rows)
    bad = {"id": rows[k]["id"], "input_ids": list(rows[k]["input_ids"]), "labels": list(rows[k]["labels"])}
    change(tokenizer, bad["input_ids"], bad["labels"], tag, eom)
    sink = check(tokenizer, [*rows[:k], bad, *rows[k + 1:]])
    assert rules <= set(sink.counts), (name, sink.items[:3])  # e.g. a shift also trains a header: more may fail
    assert {v["id"] for v in sink.items} == {bad["id"]} and {v["row"] for v in sink.items} == {k}
    if name == "drop_eom":
        assert "<|eom_id|>" in sink.items[0]["message"]


def test_partly_trained_untrained_call_is_caught(rows, tokenizer):
    """A weight-0 built-in call whose <|python_tag|> got trained: the turn is neither trained nor not."""
    k = next(i for i, r in enumerate(rows) if any(
        t == tokenizer.python_tag_id and lab == IGNORE_INDEX for t, lab in zip(r["input_ids"], r["labels"], strict=True)))
    ids, labs = rows[k]["input_ids"], list(rows[k]["labels"])
    p = _untrained_call(tokenizer, ids, labs)
    labs[p] = ids[p]
    sink = check(tokenizer, [dict(rows[k], labels=labs)])
    assert set(sink.counts) == {"assistant_turn_whole"} and sink.items[0]["id"] == rows[k]["id"]
