"""Train/eval overlap between two prepared folders, from the hashes the run stored.

No re-tokenisation and no source files: each folder's shards already hold a content hash (and a
prompt hash) per conversation, read column-wise from memory-mapped Arrow; the set test runs in
Arrow (``pyarrow.compute.is_in``), so only the rows that overlap become Python objects.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from sftdata.cli_errors import SftdataCommand
from sftdata.errors import ManifestError, UsageError
from sftdata.storage.opener import map_regular


class OverlapError(UsageError):
    """A folder that cannot be compared (not a prepared folder, a file that is not a regular file, a shard
    without the hash columns): exit 2."""


def _columns(folder: Path, prompts: bool) -> tuple[Any, Any]:
    """(hashes, ids) of every conversation of a prepared folder, packed rows included, in folder
    order, as Arrow arrays: only the id and hash columns of each memory-mapped shard are touched."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from sftdata.manifest import read_manifest

    try:
        manifest = read_manifest(str(folder))
    except ManifestError as exc:
        raise OverlapError(f"{folder} is not a prepared folder: {exc}") from None
    single, packed = ("prompt_hash", "prompt_hashes") if prompts else ("content_hash", "content_hashes")
    hashes, ids = [], []
    for name in manifest.shard_files:  # plain shard names, each once: read_manifest checked them
        try:
            mapped = map_regular(folder / name, what=f"{folder}/{name}")
            table = pa.ipc.open_stream(pa.py_buffer(mapped)).read_all()
            if "packed_ids" in table.column_names:
                h, i = pc.list_flatten(table[packed]), pc.list_flatten(table["packed_ids"])
            else:
                h, i = table[single], table["id"]
        except (KeyError, pa.ArrowException) as exc:  # not a shard sftdata wrote (no hash columns, not Arrow)
            raise OverlapError(f"{folder / name}: not a shard of a prepared folder: {type(exc).__name__}: {exc}") \
                from None
        if len(h) != len(i):
            raise OverlapError(f"{folder / name}: not a shard of a prepared folder: {len(i)} packed ids for "
                               f"{len(h)} hashes")
        for out, col in ((hashes, h), (ids, i)):  # the arrays themselves (a list of ChunkedArrays is slow)
            col = col.cast(pa.string())
            out.extend(col.chunks if isinstance(col, pa.ChunkedArray) else [col])
    return pa.chunked_array(hashes, pa.string()), pa.chunked_array(ids, pa.string())


def _shared(hashes: Any, ids: Any, other: Any) -> tuple[dict[str, list[str]], Any]:
    """hash -> ids (in folder order) of the rows whose hash occurs in ``other``, and their hashes as
    an Arrow array: the set test is Arrow's, so only the overlapping rows become Python objects
    (and no Python list becomes an Arrow array: ``pa.array`` of a list imports pandas)."""
    import pyarrow.compute as pc

    keep = pc.is_in(hashes, value_set=pc.unique(other))
    kept = hashes.filter(keep)
    out: dict[str, list[str]] = defaultdict(list)
    for h, rid in zip(kept.to_pylist(), ids.filter(keep).to_pylist(), strict=True):
        out[h].append(rid)
    return out, kept


@dataclass
class OverlapReport:
    kind: str
    a: str
    b: str
    matches: list[dict] = field(default_factory=list)  # {"hash", "a_ids", "b_ids"}

    @property
    def a_records(self) -> int:
        return sum(len(m["a_ids"]) for m in self.matches)

    @property
    def b_records(self) -> int:
        return sum(len(m["b_ids"]) for m in self.matches)

    def to_json(self) -> dict:
        return {"kind": self.kind, "a": self.a, "b": self.b, "overlapping_hashes": len(self.matches),
                "a_records": self.a_records, "b_records": self.b_records, "matches": self.matches}


def find_overlap(dir_a: str | Path, dir_b: str | Path, prompts: bool = False) -> OverlapReport:
    (ha, ia), (hb, ib) = _columns(Path(dir_a), prompts), _columns(Path(dir_b), prompts)
    a, shared = _shared(ha, ia, hb)
    b, _ = _shared(hb, ib, shared)
    report = OverlapReport("prompt" if prompts else "content", str(dir_a), str(dir_b))
    for h in sorted(a.keys() & b.keys(), key=lambda h: (a[h][0], h)):
        report.matches.append({"hash": h, "a_ids": a[h], "b_ids": b[h]})
    return report


@click.command("overlap", cls=SftdataCommand, epilog="""\b
Example:
  sftdata overlap out/train out/eval --fail-on-overlap
  sftdata overlap out/train out/eval --prompts --json overlap.json
""")
@click.argument("dir_a", type=click.Path(exists=True, file_okay=False))
@click.argument("dir_b", type=click.Path(exists=True, file_okay=False))
@click.option("--prompts", is_flag=True, help="Compare prompts alone (system, user and tool turns, tools).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report as JSON here.")
@click.option("--fail-on-overlap", is_flag=True, help="Exit 1 when any record overlaps.")
@click.option("--limit", type=int, default=20, show_default=True, help="Matches to print.")
def overlap_cmd(dir_a, dir_b, prompts, json_path, fail_on_overlap, limit) -> None:
    """Records of DIR_A whose content (or prompt) also occurs in DIR_B, with ids on both sides."""
    report = find_overlap(dir_a, dir_b, prompts)
    click.echo(f"{report.kind} overlap: {len(report.matches)} shared hash(es); "
               f"{report.a_records} record(s) in {dir_a}, {report.b_records} in {dir_b}")
    for m in report.matches[:limit]:
        click.echo(f"  {', '.join(m['a_ids'])}  <->  {', '.join(m['b_ids'])}")
    if len(report.matches) > limit:
        click.echo(f"  ... and {len(report.matches) - limit} more")
    if json_path:
        import orjson  # a report of a million matches: seconds with json, a fraction with orjson

        Path(json_path).write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    if fail_on_overlap and report.matches:
        raise SystemExit(1)
