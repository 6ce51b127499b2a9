"""A drop-in ``DataCollatorForCompletionOnlyLM`` for code written against the old TRL guide.

TRL removed the class (its job moved into dataset preparation: ``completion_only_loss``,
``assistant_only_loss``), but many training scripts still build one. This module keeps the old
signature and fixes what made the original dangerous:

* **It never fails silently.** The original warned and masked the *whole* example when the response
  template was not found, so a template of the wrong chat format trained on nothing while the loss
  looked fine. Here a missing response template raises ``ValueError`` naming the template, the
  example and its first tokens, with a hint when the template belongs to another chat format
  (ChatML, ``[INST]``, ``### Response:`` on Llama-3 data).
* **Matching does not depend on left context.** A BPE tokenizer can encode ``"### Answer:"``
  differently after a newline, a space or punctuation. The template is tokenized alone, without
  its leading whitespace, and after several contexts (context tokens removed), and every
  variant is searched. Templates made of special tokens (Llama-3 headers) match on ids directly;
  their trailing ``"\\n\\n"`` also matches a longer whitespace token (content that starts with
  whitespace). A list of token ids is matched as given.
* **Llama-3 aware spans.** Tokens after each response template are trained up to the next
  instruction or response template, or the end. When the response template is a Llama-3 header
  (it contains ``<|start_header_id|>``), the span also stops *at* the first ``<|eot_id|>`` or
  ``<|eom_id|>`` (a tool call with built-in tools), inclusive: exactly the assistant content and
  its closing token, the labels of
  ``sftdata``'s pipeline. Turns that follow (system, user, ipython) stay untrained even without an
  instruction template, and the model still learns to stop.

Labels outside spans and padding are ``ignore_index``; a pad token that equals EOS is never masked
inside a span (the original masked every pad id, hence every EOS, when pad == eos).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sftdata.constants import IGNORE_INDEX

LLAMA3_RESPONSE = "<|start_header_id|>assistant<|end_header_id|>\n\n"
LLAMA3_INSTRUCTION = "<|start_header_id|>user<|end_header_id|>\n\n"
# Left contexts a template is tried after; the context's own tokens are then removed.
_CONTEXTS = ("\n", "\n\n", " ", ".", ":", "a")
_HEAD_TOKENS = 20


def _template_kind(text: str) -> str | None:
    """The chat format a template string belongs to, for hints."""
    if "<|start_header_id|>" in text or "<|eot_id|>" in text:
        return "llama3"
    if "<|im_start|>" in text or "<|im_end|>" in text:
        return "chatml"
    if "[INST]" in text or "[/INST]" in text:
        return "inst"
    if re.search(r"#{2,}\s*\w+", text):
        return "alpaca"
    return None


_KIND_NAMES = {"chatml": "a ChatML template", "inst": "an [INST] (Llama-2/Mistral) template",
               "alpaca": "an Alpaca-style '### Response:' template", None: "not a Llama-3 header"}


def _token_id(tok: Any, token: str) -> int | None:
    i = tok.convert_tokens_to_ids(token)
    return i if isinstance(i, int) and i != tok.unk_token_id else None


def _occurrences(ids: list[int], pattern: tuple[int, ...]) -> list[int]:
    """Start offsets of ``pattern`` in ``ids`` (``list.index`` keeps the scan in C)."""
    out, first, m, start = [], pattern[0], len(pattern), 0
    while True:
        try:
            i = ids.index(first, start)
        except ValueError:
            return out
        if m == 1 or tuple(ids[i:i + m]) == pattern:
            out.append(i)
        start = i + 1


class TemplateMatcher:
    """Finds one template (string or token ids) in token space, whatever precedes it."""

    def __init__(self, template: str | Sequence[int], tok: Any) -> None:
        self.tok = tok
        if isinstance(template, str):
            if not template:
                raise ValueError("a template must not be empty")
            self.text = template
            self.token_ids = self._encode(template)
            variants = {tuple(self.token_ids)}
            # The template alone, without its leading whitespace, with one leading space (which a
            # BPE pre-tokenizer glues to the first symbol), and after each context.
            for body in {template, template.lstrip(), " " + template.lstrip()} - {"", " "}:
                variants.add(tuple(self._encode(body)))
                for ctx in _CONTEXTS:
                    c, full = self._encode(ctx), self._encode(ctx + body)
                    if full[:len(c)] == c and len(full) > len(c):
                        variants.add(tuple(full[len(c):]))
            head, tail = template.rstrip(), template[len(template.rstrip()):]
            prefix = self._encode(head) if head and tail else []
            special = set(getattr(tok, "all_special_ids", ())) | {
                i for i, t in getattr(tok, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
            self.relaxed = (tuple(prefix), tail) if prefix and prefix[-1] in special else None
        else:
            self.token_ids = [int(i) for i in template]
            if not self.token_ids:
                raise ValueError("a template must not be empty")
            self.text = tok.decode(self.token_ids)
            variants, self.relaxed = {tuple(self.token_ids)}, None
        self.variants = sorted(variants, key=len, reverse=True)
        self._ws: dict[int, bool] = {}
        start_header = _token_id(tok, "<|start_header_id|>")
        self.llama3_header = start_header is not None and start_header in self.token_ids
        self.kind = "llama3" if self.llama3_header else _template_kind(self.text)
        self.label = repr(template) if isinstance(template, str) else f"{self.token_ids} ({self.text!r})"

    def _encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def _whitespace_after(self, token: int, tail: str) -> bool:
        ok = self._ws.get(token)
        if ok is None:
            s = self.tok.decode([token])
            ok = self._ws[token] = s.startswith(tail) and s.isspace()
        return ok

    def find(self, ids: list[int]) -> list[tuple[int, int]]:
        """(start, end) of each occurrence, left to right, never overlapping (longest wins)."""
        hits = [(i, i + len(v)) for v in self.variants for i in _occurrences(ids, v)]
        if self.relaxed is not None:
            prefix, tail = self.relaxed
            for i in _occurrences(ids, prefix):
                j = i + len(prefix)
                if j < len(ids) and self._whitespace_after(ids[j], tail):
                    hits.append((i, j + 1))
        hits.sort(key=lambda h: (h[0], -h[1]))
        out: list[tuple[int, int]] = []
        for s, e in hits:
            if not out or s >= out[-1][1]:
                out.append((s, e))
        return out


class DataCollatorForCompletionOnlyLM:
    """Pads a batch and trains only the response spans; the old TRL signature, with loud failures.

    ``tokenizer``: a transformers tokenizer (or an ``sftdata`` ``Tokenizer``); its ``pad_token_id``
    pads ``input_ids`` and its ``padding_side`` is honoured. ``padding_free=True`` concatenates the
    batch into one row with ``position_ids`` (no ``attention_mask``), the first label of each
    example ignored, as TRL's padding-free collators do.
    """

    def __init__(self, response_template: str | Sequence[int], instruction_template: str | Sequence[int] | None = None,
                 *, tokenizer: Any, mlm: bool = False, ignore_index: int = IGNORE_INDEX, padding_free: bool = False,
                 pad_to_multiple_of: int | None = None) -> None:
        from sftdata.tokenizer import Tokenizer

        if mlm:
            raise ValueError("mlm=True: a masked language model has no response spans to train; use mlm=False")
        tok = tokenizer.hf if isinstance(tokenizer, Tokenizer) else tokenizer
        self.tokenizer = tok
        self.ignore_index = ignore_index
        self.padding_free = padding_free
        self.pad_to_multiple_of = pad_to_multiple_of
        self.response = TemplateMatcher(response_template, tok)
        self.instruction = TemplateMatcher(instruction_template, tok) if instruction_template is not None else None
        # The old attributes, for scripts that read them.
        self.response_template, self.instruction_template = response_template, instruction_template
        self.response_token_ids = self.response.token_ids
        self.instruction_token_ids = self.instruction.token_ids if self.instruction else None
        if self.instruction and None not in (self.instruction.kind, self.response.kind) \
                and self.instruction.kind != self.response.kind:
            raise ValueError(f"instruction template {self.instruction.label} ({self.instruction.kind}) and response "
                             f"template {self.response.label} ({self.response.kind}) belong to different chat formats")
        self.eot_id = _token_id(tok, "<|eot_id|>") if self.response.llama3_header else None
        closers = (self.eot_id, _token_id(tok, "<|eom_id|>")) if self.eot_id is not None else ()
        self._closers = tuple(i for i in closers if i is not None)
        self._bos = _token_id(tok, "<|begin_of_text|>")
        self._start_header = _token_id(tok, "<|start_header_id|>")
        self.pad_token_id = tok.pad_token_id
        if self.pad_token_id is None and not padding_free:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token (for Llama-3: "
                             "'<|finetune_right_pad_id|>') before building the collator")

    # -- labels ---------------------------------------------------------------------------------
    def labels_for(self, input_ids: Sequence[int], index: int = 0) -> list[int]:
        """Labels of one unpadded example; raises ``ValueError`` when no response template is found."""
        ids = [int(i) for i in input_ids]
        responses = self.response.find(ids)
        if not responses:
            raise ValueError(self._not_found(ids, index))
        instructions = self.instruction.find(ids) if self.instruction else []
        bounds = sorted({s for s, _ in responses} | {s for s, _ in instructions})
        labels = [self.ignore_index] * len(ids)
        for _, e in responses:
            k = bisect.bisect_left(bounds, e)
            stop = bounds[k] if k < len(bounds) else len(ids)
            for closer in self._closers:  # the first of them: each search is bounded by the last find
                try:
                    stop = ids.index(closer, e, stop) + 1
                except ValueError:
                    pass  # truncated: train to the end, as the pipeline does
            labels[e:stop] = ids[e:stop]
        return labels

    def _not_found(self, ids: list[int], index: int) -> str:
        head = self.tokenizer.decode(ids[:_HEAD_TOKENS])
        where = f"in example {index} of the batch ({len(ids)} tokens; first {_HEAD_TOKENS} decoded: {head!r})"
        return f"response template {self.response.label} not found {where}. {self._hint(ids)}"

    def _hint(self, ids: list[int]) -> str:
        starts_bos = bool(ids) and self._bos is not None and ids[0] == self._bos
        llama3_data = self._start_header is not None and self._start_header in ids
        kind = self.response.kind
        if llama3_data and kind != "llama3":
            shape = "starts with <|begin_of_text|>" if starts_bos else "holds <|start_header_id|> headers"
            return (f"This looks like {_KIND_NAMES[kind]} but the data is Llama-3 formatted ({shape}); use "
                    f"response_template={LLAMA3_RESPONSE!r} (and instruction_template={LLAMA3_INSTRUCTION!r}).")
        if kind == "llama3" and not llama3_data:
            return ("The template is a Llama-3 header but the example has no <|start_header_id|> token: it was rendered "
                    "with another chat template, or its special tokens were tokenized as plain text.")
        return ("The example may have been truncated before its response (drop it or raise max_length), or the "
                "template appears in the data with other tokens; pass the template's token ids as they appear there.")

    # -- batching -------------------------------------------------------------------------------
    def __call__(self, examples: Sequence[Mapping[str, Any] | Sequence[int]], return_tensors: str | None = None
                 ) -> dict[str, Any]:
        import torch

        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors={return_tensors!r}: only 'pt' is supported")
        if not examples:
            raise ValueError("empty batch")
        rows: list[tuple[list[int], list[int], list[int]]] = []
        for i, ex in enumerate(examples):
            raw = ex["input_ids"] if isinstance(ex, Mapping) else ex
            ids = raw.tolist() if hasattr(raw, "tolist") else [int(t) for t in raw]
            mask = ex.get("attention_mask") if isinstance(ex, Mapping) else None
            mask = (mask.tolist() if hasattr(mask, "tolist") else list(mask)) if mask is not None else [1] * len(ids)
            labels = self.labels_for(ids, i)
            labels = [lab if m else self.ignore_index for lab, m in zip(labels, mask, strict=True)]
            rows.append((ids, mask, labels))
        if self.padding_free:
            flat_ids, flat_labels, positions = [], [], []
            for ids, mask, labels in rows:
                keep = [j for j, m in enumerate(mask) if m]
                flat_ids += [ids[j] for j in keep]
                flat_labels += [labels[j] if k else self.ignore_index for k, j in enumerate(keep)]
                positions += range(len(keep))
            return {"input_ids": torch.tensor([flat_ids], dtype=torch.long),
                    "labels": torch.tensor([flat_labels], dtype=torch.long),
                    "position_ids": torch.tensor([positions], dtype=torch.long)}
        width = max(len(ids) for ids, _, _ in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        out_ids, out_mask, out_labels = [], [], []
        for ids, mask, labels in rows:
            n = width - len(ids)

            def pad(seq: list[int], value: int, n: int = n) -> list[int]:
                return [value] * n + seq if left else seq + [value] * n

            out_ids.append(pad(ids, self.pad_token_id))
            out_mask.append(pad(mask, 0))
            out_labels.append(pad(labels, self.ignore_index))
        return {"input_ids": torch.tensor(out_ids, dtype=torch.long),
                "attention_mask": torch.tensor(out_mask, dtype=torch.long),
                "labels": torch.tensor(out_labels, dtype=torch.long)}
