"""What a run has done in its output folder, and what ``--resume`` may keep: one object.

Like datatrove's "skip completed units", in one place: the plan file (``.sftdata/plan.json``)
ties the folder to its inputs, settings and tokenizer; a chunk counts as done only with its
done-marker, this run's id, its shards at their recorded sizes (on a local folder: at their
SHA-256, and its quarantine part too) and unchanged input bytes. Everything else of a pending
chunk is removed before it is redone, and only names ``storage.layout`` says are ours.

The runner reads: plan (``_plan``) -> ``Ledger`` (``open``, ``done``, ``clean``) -> executor ->
``Ledger.check_commit`` -> ``commit.finalize``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from sftdata.errors import RunError
from sftdata.output import check_markers_are_ours
from sftdata.process.chunk import ChunkResult
from sftdata.process.identity import InputChanged, chunk_digest, input_digests
from sftdata.stages.read.jsonl import Chunk
from sftdata.storage import Folder, display
from sftdata.storage.layout import PLAN_NAME, chunk_marker, chunk_quarantine, leftovers_of

if TYPE_CHECKING:
    from sftdata.config import Settings
    from sftdata.manifest import Manifest


def input_size(path: Path) -> int:
    """Bytes of an input: a file, or every file of a ``datasets`` folder."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


class Ledger:
    """The chunks of one plan in one output folder: which are done, which are to be redone."""

    def __init__(self, out: Folder, chunks: list[Chunk], plan: dict) -> None:
        self.out, self.chunks, self.plan = out, chunks, plan

    @staticmethod
    def check_finished(out: Folder, manifest: Manifest, settings: Settings, files: list[Path],
                       chunks: list[Chunk], plan: dict) -> None:
        """`--resume` on a finished folder is a no-op only if it was made from the same inputs and settings.

        Inputs are compared by name, size and (for manifests that record it) the digest of their
        bytes, so a same-size edit or another file of the same name and size is caught.
        """
        recorded = {k: v for k, v in manifest.pipeline.items() if k not in ("chunk_bytes", "audit")}
        if recorded != orjson.loads(orjson.dumps(settings.output_settings())):
            changed = sorted(k for k in set(recorded) | set(settings.output_settings())
                             if recorded.get(k) != orjson.loads(orjson.dumps(settings.output_settings().get(k))))
            raise RunError(f"{out} holds a finished run with other settings ({', '.join(changed)} differ); use "
                           "--overwrite to replace it")
        now = [(p.name, input_size(p)) for p in files]
        if [(i["name"], i["bytes"]) for i in manifest.inputs] != now:
            raise RunError(f"{out} holds a finished run made from other inputs (names or sizes differ); use "
                           "--overwrite to replace it")
        if all("digest" in i for i in manifest.inputs):
            digests = input_digests(chunks, {c.index: chunk_digest(c) for c in chunks},
                                    [i["path"] for i in plan["inputs"]])
            for item, path, now_item in zip(manifest.inputs, files, plan["inputs"], strict=True):
                if digests[now_item["path"]] != item["digest"]:
                    raise InputChanged(f"{out} holds a finished run, but input {path} is not the file it was made "
                                       "from (same name and size, other bytes); use --overwrite to rebuild it")

    def open(self, run_id: str) -> str:
        """Write this call's plan; a folder holding another plan is refused, one holding the same
        plan keeps its run id (so its done-markers count). Returns the run id in force."""
        if self.out.size(PLAN_NAME) is not None:
            old = orjson.loads(self.out.read_bytes(PLAN_NAME))
            diff = plan_difference(old, self.plan)
            if diff:
                raise RunError(f"{self.out} holds a run with other inputs or settings ({diff}); --resume needs "
                               "the same ones (or use --overwrite)")
            run_id = old.get("run_id") or run_id
        self.plan["run_id"] = run_id
        self.out.write_bytes(PLAN_NAME, orjson.dumps(self.plan, option=orjson.OPT_SORT_KEYS))
        return run_id

    def done(self, keep: Callable[[ChunkResult], None] | None = None) -> dict[int, ChunkResult]:
        """Done-markers of this run whose files are whole and whose input bytes are unchanged.
        ``keep``: called with each one as it is read (the runner spills its per-row lists there, so
        that a resume never holds every done chunk's rows at once)."""
        done = {}
        files = self.out.listing()
        for c in self.chunks:
            if chunk_marker(c.index) not in files:
                continue
            try:
                res = ChunkResult.from_json(orjson.loads(self.out.read_bytes(chunk_marker(c.index))))
            except (orjson.JSONDecodeError, TypeError, KeyError):
                continue
            if res.run_id != self.plan["run_id"] or not all(files.get(s.file) == s.bytes for s in res.shards):
                continue
            if not self.out.remote and not self._content_matches(c, res):
                continue
            if res.input_digest != chunk_digest(c):
                raise InputChanged(f"input {display(c.path)} changed since chunk {c.index} (bytes {c.start}-{c.end}) "
                                   f"was committed into {self.out}: the same name, size and modification time, other "
                                   "bytes. Resuming would mix old and new rows; rerun with --overwrite")
            if keep is not None:
                keep(res)
            done[c.index] = res
        return done

    def _content_matches(self, chunk: Chunk, res: ChunkResult) -> bool:
        """The bytes a local done-marker vouches for are the ones it recorded (sha256 of every shard
        and of the quarantine part). The local pool renames its chunk files into place without
        waiting for the disk and syncs them all at the commit, so after a power cut a marker can
        outlive its shards' bytes; such a chunk is redone. Remote files are durable once uploaded,
        and their sizes are checked in ``done``."""
        part = chunk_quarantine(chunk.index)
        if res.quarantine_sha256 and res.has_quarantine_part and (self.out.size(part) is None
                                                                  or self.out.sha256(part) != res.quarantine_sha256):
            return False
        return all(self.out.sha256(s.file) == s.sha256 for s in res.shards)

    def clean(self, pending: list[Chunk]) -> None:
        """Temp files of a killed run, and every file of a chunk to be redone (markers first); on an
        object store also this machine's staging leftovers of an earlier attempt."""
        folders = [self.out] + ([Folder(str(self.out.staging()))] if self.out.remote else [])
        for folder in folders:
            names = folder.listing()
            for c in pending:
                if chunk_marker(c.index) in names:
                    folder.delete(chunk_marker(c.index))
            for name in leftovers_of(names, [c.index for c in pending]):
                folder.delete(name)

    def check_commit(self, files: list[Path], results: dict[int, ChunkResult]) -> None:
        """Before the commit: the inputs are as planned, and every marker is this run's."""
        for item, path in zip(self.plan["inputs"], files, strict=True):
            try:
                now = (input_size(path), path.stat().st_mtime_ns)
            except OSError as exc:
                raise InputChanged(f"input {path} cannot be read any more ({exc.strerror or exc}); nothing was "
                                   "committed") from None
            if now != (item["bytes"], item["mtime_ns"]):
                raise InputChanged(f"input {path} changed while the run read it ({item['bytes']} -> {now[0]} "
                                   "bytes); nothing was committed: rerun with --overwrite once it is stable")
        run_id = self.plan["run_id"]
        current = orjson.loads(self.out.read_bytes(PLAN_NAME)).get("run_id")
        check_markers_are_ours(run_id, {i: r.run_id for i, r in results.items()}
                               | ({-1: current} if current != run_id else {}), self.out)


def plan_difference(old: dict, new: dict) -> str:
    """What differs between a folder's plan and this call's (for the refusal message)."""
    diffs = []
    if old.get("tokenizer_fingerprint") != new.get("tokenizer_fingerprint"):
        diffs.append("the tokenizer (its fingerprint differs: edited files, another revision or version)")
    old_s, new_s = old.get("settings", {}), orjson.loads(orjson.dumps(new["settings"]))
    changed = sorted(k for k in set(old_s) | set(new_s) if old_s.get(k) != new_s.get(k))
    if changed:
        diffs.append(f"settings {', '.join(changed)}")
    old_in = {i.get("path"): i for i in old.get("inputs", [])}
    new_in = {i["path"]: i for i in new["inputs"]}
    for path in sorted(set(old_in) | set(new_in)):
        a, b = old_in.get(path), new_in.get(path)
        if a is None or b is None:
            diffs.append(f"input {path} {'added' if a is None else 'missing'}")
        elif (a.get("bytes"), a.get("mtime_ns")) != (b["bytes"], b["mtime_ns"]):
            diffs.append(f"input {path} (size or modification time changed)")
    if not diffs and old.get("chunk_bytes") != new["chunk_bytes"]:
        diffs.append("the chunk size")
    return "; ".join(diffs)
