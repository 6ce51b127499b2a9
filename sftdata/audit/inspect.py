"""Look at single rows the way the model sees them: token by token, trained tokens marked.

Why token by token: mask bugs hide at token boundaries (is the ``\\n\\n`` after the header trained?
is the ``<|eot_id|>``?). Decoding a whole row hides those boundaries; here every token is decoded on
its own, from its raw bytes, so a boundary inside a multi-byte character shows as ``\\xNN`` instead
of a silent replacement character. The same pieces feed the HTML samples and ``--source`` compares
rows found here by id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from sftdata.audit.arrays import list_parts
from sftdata.audit.integrity import AuditError, load_manifest, open_output, read_shard
from sftdata.audit.report import Violations
from sftdata.constants import IGNORE_INDEX
from sftdata.storage import Folder

_PIECES: dict[str, dict[int, str]] = {}  # tokenizer fingerprint -> id -> printable piece


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode table, which byte-level BPE vocabularies (Llama 3) use."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


_BYTES = _byte_decoder()


def token_pieces(tokenizer: Any, ids: Any) -> list[str]:
    """Each id decoded alone (cached per tokenizer): specials by name, others from their bytes."""
    cache = _PIECES.setdefault(tokenizer.fingerprint, {})
    ids = [int(i) for i in ids]
    missing = sorted(set(ids) - cache.keys())
    if missing:
        try:
            names = tokenizer.hf.convert_ids_to_tokens(missing)
        except Exception:  # an id outside the vocabulary
            names = [None] * len(missing)
        for i, name in zip(missing, names, strict=True):
            if name is None:
                cache[i] = f"<id {i}?>"
            elif i in tokenizer.special_ids or not all(ch in _BYTES for ch in name):
                cache[i] = name if i in tokenizer.special_ids else tokenizer.decode([i])
            else:
                cache[i] = bytes(_BYTES[ch] for ch in name).decode("utf-8", "backslashreplace")
    return [cache[i] for i in ids]


@dataclass
class Row:
    """One stored row, as arrays, with where it came from."""

    id: str | None
    shard: str
    row: int
    index: int
    input_ids: np.ndarray
    labels: np.ndarray
    seq_lengths: list[int] | None = None
    packed_ids: list[str] | None = None

    @property
    def trained(self) -> int:
        return int(np.count_nonzero(self.labels != IGNORE_INDEX))


def _row(table: Any, shard: str, r: int, index: int) -> Row:
    part = table.slice(r, 1)
    ids = list_parts(part.column("input_ids"))[0]
    labels = list_parts(part.column("labels"))[0]
    get = part.column
    return Row(id=get("id")[0].as_py(), shard=shard, row=r, index=index, input_ids=ids, labels=labels,
               seq_lengths=get("seq_lengths")[0].as_py() if "seq_lengths" in part.column_names else None,
               packed_ids=get("packed_ids")[0].as_py() if "packed_ids" in part.column_names else None)


def find_row(folder: str | Path, *, id: str | None = None, index: int | None = None,
             shard: str | None = None, row: int | None = None) -> Row:
    """A row by ``id`` (also a packed conversation's id), by global ``index`` in shard order, or by
    ``shard`` and ``row``; the first row when nothing is given."""
    folder = open_output(folder)
    manifest = load_manifest(folder)
    seen = 0
    for entry in manifest["shards"]:
        name = entry["file"]
        if shard is not None and name != shard:
            continue
        try:
            table = read_shard(folder, name)
        except Exception as exc:
            raise AuditError(f"{name}: cannot read the shard: {exc}") from exc
        if shard is not None:
            if row is None or not 0 <= row < table.num_rows:
                raise AuditError(f"{name} has {table.num_rows} rows; no row {row}")
            return _row(table, name, row, seen + row)
        if id is not None:
            hit = pc.index(table.column("id"), id).as_py()
            if hit < 0 and "packed_ids" in table.column_names:
                packed = table.column("packed_ids").combine_chunks()
                flat = pc.index(pc.list_flatten(packed), id).as_py()
                if flat >= 0:
                    hit = int(np.searchsorted(packed.offsets.to_numpy()[1:] - packed.offsets[0].as_py(), flat, "right"))
            if hit >= 0:
                return _row(table, name, hit, seen + hit)
        elif index is None or seen + table.num_rows > index:
            r = 0 if index is None else index - seen
            if r >= 0:
                return _row(table, name, r, seen + r)
        seen += table.num_rows
    if id is not None:
        raise AuditError(f"no row with id {id!r} in {folder}")
    raise AuditError(f"no row {index if index is not None else 0} in {folder} ({seen} rows)")


def render_row(row: Row, tokenizer: Any, *, color: bool) -> Any:
    """Plain text with ``|`` between tokens and ``[[...]]`` around trained runs, or (``color``) a
    rich Text whose alternating backgrounds show the boundaries and green marks trained tokens."""
    from rich.text import Text

    pieces = token_pieces(tokenizer, row.input_ids)
    n = len(pieces)
    trained = np.zeros(n, bool)
    m = min(n, len(row.labels))
    trained[:m] = row.labels[:m] != IGNORE_INDEX
    notes: dict[int, str] = {}
    if row.seq_lengths and len(row.seq_lengths) > 1:
        for k, start in enumerate(np.cumsum([0, *row.seq_lengths[:-1]]).tolist()):
            name = row.packed_ids[k] if row.packed_ids and k < len(row.packed_ids) else f"#{k}"
            notes[int(start)] = f"── conversation {k}: {name} ──\n"
    head = (f"id={row.id!r} shard={row.shard} row={row.row} index={row.index} tokens={n} "
            f"trained={row.trained}\n")
    text = Text(head, style="bold")
    parts = [head, "legend: | between tokens, [[...]] around trained tokens (labels != -100)\n"]
    open_, line_start = False, True
    for i, piece in enumerate(pieces):
        if i in notes:
            if open_:
                parts.append("]]")
                open_ = False
            note = ("" if line_start else "\n") + notes[i]
            text.append(note, style="bold cyan")
            parts.append(note)
            line_start = True
        shown = piece.replace("\n", "\\n")
        brk = "\n" in piece or int(row.input_ids[i]) == tokenizer.eot_id
        if color:
            style = ("black on green3", "black on chartreuse3") if trained[i] else ("on grey23", "on grey35")
            text.append(shown, style=style[i % 2])
            text.append("\n" if brk else "")
        else:
            prefix = "" if line_start else "|"
            if trained[i] and not open_:
                prefix += "[["
            elif open_ and not trained[i]:
                prefix = "]]" + prefix
            open_ = bool(trained[i])
            parts.append(prefix + shown)
            if brk and open_ and (i + 1 == n or not trained[i + 1] or i + 1 in notes):
                parts.append("]]")
                open_ = False
            parts.append("\n" if brk else "")
        line_start = brk
    if color:
        return text
    return "".join(parts + (["]]"] if open_ else [])).rstrip("\n") + "\n"


def _stored_conversations(folder: Folder, manifest: dict) -> dict[str, list[tuple[str, int, np.ndarray, np.ndarray]]]:
    """Every stored conversation by id: (shard, row, input_ids, labels); packed rows are split."""
    stored: dict[str, list[tuple[str, int, np.ndarray, np.ndarray]]] = {}
    for entry in manifest["shards"]:
        try:
            table = read_shard(folder, entry["file"])
        except Exception:
            continue  # shard_integrity reports it
        ids, lens = list_parts(table.column("input_ids"))
        labels, llens = list_parts(table.column("labels"))
        starts, lstarts = np.concatenate([[0], np.cumsum(lens)]), np.concatenate([[0], np.cumsum(llens)])
        row_ids = table.column("id").to_pylist()
        seqs = table.column("seq_lengths").to_pylist() if "seq_lengths" in table.column_names else None
        packed = table.column("packed_ids").to_pylist() if "packed_ids" in table.column_names else None
        for r, rid in enumerate(row_ids):
            a, la = int(starts[r]), int(lstarts[r])
            parts, names = [int(lens[r])], [rid]
            if seqs is not None and seqs[r] and sum(seqs[r]) == lens[r]:
                parts = seqs[r]
                good = packed is not None and packed[r] and len(packed[r]) == len(parts)
                names = packed[r] if good else [rid] if len(parts) == 1 else [f"{rid}#{k}" for k in range(len(parts))]
            for name, n in zip(names, parts, strict=True):
                stored.setdefault(name, []).append((entry["file"], r, ids[a:a + n], labels[la:la + n]))
                a, la = a + n, la + n
    return stored


def compare_sources(folder: str | Path, manifest: dict, sources: list[str], sink: Violations,
                    tokenizer: Any = None) -> int:
    """Re-render the source records with ``sftdata.process.rerender.render_source_rows`` and compare each
    conversation's input_ids and labels with the stored ones; returns how many were compared.
    With ``tokenizer`` a mismatch names its first differing token, decoded."""
    from sftdata.process.rerender import render_source_rows

    stored = _stored_conversations(open_output(folder), manifest)
    compared = 0
    for rid, input_ids, labels in render_source_rows([str(s) for s in sources], manifest):
        hits = stored.get(rid)
        if not hits:
            sink.add("source_match", "rendered from the sources but not in the shards", id=rid)
            continue
        shard, r, got_ids, got_labels = hits.pop(0)
        compared += 1
        if tokenizer is not None:
            from sftdata.audit.source_compare import first_difference

            found = first_difference(tokenizer, (got_ids, got_labels), (np.asarray(input_ids), np.asarray(labels)))
            if found is not None:
                sink.add("source_match", found[1], id=rid, shard=shard, row=r, position=found[0])
            continue
        for what, want, got in (("input_ids", input_ids, got_ids), ("labels", labels, got_labels)):
            want = np.asarray(want, dtype=np.int64)
            n = min(len(want), len(got))
            diff = np.flatnonzero(want[:n] != got[:n])
            if diff.size or len(want) != len(got):
                pos = int(diff[0]) if diff.size else n
                sink.add("source_match", f"{what} differ from the re-rendered source (length {len(got)} "
                         f"stored, {len(want)} rendered)", id=rid, shard=shard, row=r, position=pos)
                break
    for rid, hits in stored.items():
        for shard, r, *_ in hits:
            sink.add("source_match", "in the shards but not rendered from the sources", id=rid, shard=shard, row=r)
    return compared
