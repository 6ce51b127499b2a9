"""Train/eval overlap between two prepared folders, from the hashes the run stored.

No re-tokenisation and no source files: each folder's shards already hold a content hash (and a
prompt hash) per conversation, read column-wise from memory-mapped Arrow one shard at a time; the
match runs on fixed-size keys spilled to disk by bucket (`sftdata.overlap_index`), so memory does
not grow with the rows, and only the matches the report lists become Python objects (with
``--json``, every match: the report holds them all).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sftdata.cli_errors import SftdataCommand
from sftdata.errors import ManifestError, UsageError
from sftdata.storage.opener import map_regular

if TYPE_CHECKING:
    from sftdata.overlap_index import Side


class OverlapError(UsageError):
    """A folder that cannot be compared (not a prepared folder, a file that is not a regular file, a shard
    without the hash columns): exit 2."""


def _shard_names(folder: Path) -> list[str]:
    from sftdata.manifest import read_manifest

    try:
        return list(read_manifest(str(folder)).shard_files)  # plain shard names, each once: checked
    except ManifestError as exc:
        raise OverlapError(f"{folder} is not a prepared folder: {exc}") from None


def _shard_columns(folder: Path, name: str, prompts: bool) -> tuple[Any, Any, Any]:
    """(hashes, ids, memory map) of every conversation of one shard, packed rows included, in shard
    order, as Arrow string arrays: only the id and hash columns of the mapped shard are touched."""
    import pyarrow as pa
    import pyarrow.compute as pc

    single, packed = ("prompt_hash", "prompt_hashes") if prompts else ("content_hash", "content_hashes")
    mapped = map_regular(folder / name, what=f"{folder}/{name}")
    try:
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
    h, i = (c.cast(pa.string()) for c in (h, i))
    return (*(c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in (h, i)), mapped)


@dataclass
class OverlapReport:
    """``matches`` in order of (first id in A, hash); with ``limit`` only the first ones, while
    ``shared`` and the record counts are always those of every match."""

    kind: str
    a: str
    b: str
    matches: list[dict] = field(default_factory=list)  # {"hash", "a_ids", "b_ids"}
    shared: int = 0
    a_records: int = 0
    b_records: int = 0

    def to_json(self) -> dict:
        return {"kind": self.kind, "a": self.a, "b": self.b, "overlapping_hashes": self.shared,
                "a_records": self.a_records, "b_records": self.b_records, "matches": self.matches}


def _top(a: Side, limit: int | None) -> list[tuple[Any, Any, tuple[int, int]]]:
    """(first id in A, hash, key) of the first ``limit`` matches (all when None), in report order."""
    import numpy as np
    import pyarrow as pa

    top: list[tuple[Any, Any, tuple[int, int]]] = []
    for recs, ids, hashes in a.matched(lambda r: r["first"] == 1):
        picked = pa.table({"i": ids, "h": hashes, "n": pa.array(np.arange(len(ids)))})
        if limit is not None:
            picked = picked.sort_by([("i", "ascending"), ("h", "ascending")]).slice(0, limit)
        rows = picked.column("n").to_numpy()
        keys = zip(recs["k0"][rows].tolist(), recs["k1"][rows].tolist(), strict=True)
        top += zip(picked.column("i").to_pylist(), picked.column("h").to_pylist(), keys, strict=True)
        if limit is not None:
            top = sorted(top, key=lambda m: (m[0], m[1]))[:limit]
    return top if limit is not None else sorted(top, key=lambda m: (m[0], m[1]))


def _ids_of(side: Side, keys: set[tuple[int, int]] | None) -> dict[tuple[int, int], list[str]]:
    """key -> ids (folder order) of the matched rows of ``side`` whose key is in ``keys`` (None: all)."""
    import numpy as np

    want = np.array(sorted(k0 for k0, _ in keys), np.uint64) if keys is not None else None
    out: dict[tuple[int, int], list[str]] = defaultdict(list)
    for recs, ids, _ in side.matched(lambda r: np.ones(len(r), bool) if want is None else np.isin(r["k0"], want)):
        for key, rid in zip(zip(recs["k0"].tolist(), recs["k1"].tolist(), strict=True), ids.to_pylist(),
                            strict=True):
            if keys is None or key in keys:
                out[key].append(rid)
    return out


def find_overlap(dir_a: str | Path, dir_b: str | Path, prompts: bool = False,
                 limit: int | None = None) -> OverlapReport:
    """Records of ``dir_a`` whose content (or prompt) hash occurs in ``dir_b``. ``limit``: list only the
    first matches (ids are then read for those alone); the counts are always the whole overlap."""
    import tempfile
    from functools import partial

    from sftdata.overlap_index import Side, match_sides

    report = OverlapReport("prompt" if prompts else "content", str(dir_a), str(dir_b))
    names = [_shard_names(Path(d)) for d in (dir_a, dir_b)]
    read = partial(_shard_columns_of, prompts=prompts)
    with tempfile.TemporaryDirectory(prefix="sftdata-overlap-") as tmp:
        a, b = (Side(Path(d), tag, Path(tmp), read) for d, tag in ((dir_a, "a"), (dir_b, "b")))
        a.spill(names[0])
        b.spill(names[1])
        report.shared, report.a_records, report.b_records = match_sides(a, b)
        if limit == 0 or not report.shared:
            return report
        top = _top(a, limit)
        keys = {key for _, _, key in top} if limit is not None else None
        a_ids, b_ids = _ids_of(a, keys), _ids_of(b, keys)
        report.matches = [{"hash": h, "a_ids": a_ids[key], "b_ids": b_ids[key]} for _, h, key in top]
    return report


def _shard_columns_of(folder: Path, name: str, *, prompts: bool) -> tuple[Any, Any, Any]:
    return _shard_columns(folder, name, prompts)


def split_pair(folder: str) -> tuple[str, str]:
    """(train, eval) folders of a split run's folder; any other folder is refused (exit 2)."""
    from sftdata.mix.splits import split_folders_of

    splits = dict(split_folders_of(folder))
    if "train" not in splits or "eval" not in splits:
        raise OverlapError(f"{folder}: one folder is compared only when it is a split run's folder (train and eval); "
                           "give two prepared folders: sftdata overlap DIR_A DIR_B")
    return splits["train"], splits["eval"]


@click.command("overlap", cls=SftdataCommand, epilog="""\b
Example:
  sftdata overlap out/train out/eval --fail-on-overlap
  sftdata overlap out/train out/eval --prompts --json overlap.json
  sftdata overlap out/mix --prompts     # a split run's folder: its train split against its eval split
""")
@click.argument("dir_a", type=click.Path(exists=True, file_okay=False))
@click.argument("dir_b", type=click.Path(exists=True, file_okay=False), required=False)
@click.option("--prompts", is_flag=True, help="Compare prompts alone (system, user and tool turns, tools).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report as JSON here.")
@click.option("--fail-on-overlap", is_flag=True, help="Exit 1 when any record overlaps.")
@click.option("--limit", type=int, default=20, show_default=True, help="Matches to print.")
def overlap_cmd(dir_a, dir_b, prompts, json_path, fail_on_overlap, limit) -> None:
    """Records of DIR_A whose content (or prompt) also occurs in DIR_B, with ids on both sides.
    With DIR_A alone, a split run's folder: its ``train`` split against its ``eval`` split."""
    if dir_b is None:
        dir_a, dir_b = split_pair(dir_a)
    report = find_overlap(dir_a, dir_b, prompts, limit=None if json_path else max(limit, 0))
    click.echo(f"{report.kind} overlap: {report.shared} shared hash(es); "
               f"{report.a_records} record(s) in {dir_a}, {report.b_records} in {dir_b}")
    for m in report.matches[:limit]:
        click.echo(f"  {', '.join(m['a_ids'])}  <->  {', '.join(m['b_ids'])}")
    if report.shared > limit:
        click.echo(f"  ... and {report.shared - limit} more")
    if json_path:
        import orjson  # a report of a million matches: seconds with json, a fraction with orjson

        Path(json_path).write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    if fail_on_overlap and report.shared:
        raise SystemExit(1)
