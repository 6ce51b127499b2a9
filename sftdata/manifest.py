"""``manifest.json``: the versioned index of a prepared folder, and the commit of a run.

Like MosaicML streaming's ``index.json``: a versioned index listing every shard with its rows,
tokens and sha256, plus everything needed to know whether two folders were made the same way
(settings, schema/template/tokenizer fingerprints, library versions). It is written last, so a
folder with a manifest is a finished run and one without is not. No wall-clock time goes in, so
identical runs give identical bytes.

Every reader (run's ``--resume``, audit, verify, train, overlap, export) goes through
``read_manifest``, which checks the format and its version and raises one ``ManifestError``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from sftdata.constants import FORMAT_VERSION, READABLE_FORMAT_VERSIONS
from sftdata.errors import ManifestError
from sftdata.storage.layout import MANIFEST_NAME
from sftdata.version import __version__

if TYPE_CHECKING:
    import pyarrow as pa

    from sftdata.config import Settings
    from sftdata.stages.write.arrow import ShardRecord
    from sftdata.storage import Folder
    from sftdata.tokenizer import Tokenizer

FORMAT = "sftdata-shards"
# the libraries whose versions decide a run's bytes (tiktoken is only the tests' oracle now: not listed)
_LIBS = ("transformers", "tokenizers", "splintr-rs", "pyarrow", "datasets", "numpy", "orjson",
         "jsonschema", "fastjsonschema")


def library_versions() -> dict[str, str]:
    """The versions of the libraries that decide a run's output, as ``importlib.metadata`` reports
    them (``absent`` for one that is not installed)."""
    import platform
    from importlib import metadata

    out = {"sftdata": __version__, "python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "absent"
    return out


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class RunCounts:
    """What the chunks of a run added up to: the manifest's ``counts`` before it is written. The
    lists behind the last three numbers are files of their own (``sftdata.sidecars``)."""

    records_read: int = 0
    records_written: int = 0
    blank_lines: int = 0
    special_text_records: int = 0
    rejected: Counter = field(default_factory=Counter)
    unknown_keys: Counter = field(default_factory=Counter)  # records per key name no stage read
    truncated_records: int = 0
    duplicate_records: int = 0
    repeated_ids: int = 0


@dataclass
class Manifest:
    """The manifest's fields in file order. ``shards`` are the entries as written (dicts), so a
    tampered entry still reaches ``verify`` to be reported by name instead of failing the load."""

    format: str
    format_version: int
    created_by: dict = field(default_factory=dict)
    pipeline: dict = field(default_factory=dict)
    fingerprints: dict = field(default_factory=dict)
    tokenizer: dict = field(default_factory=dict)
    inputs: list[dict] = field(default_factory=list)
    chunks: int = 0
    columns: list[str] = field(default_factory=list)
    shards: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    totals: dict = field(default_factory=dict)
    packing: dict | None = None
    files: dict = field(default_factory=dict)  # the folder's other files: name -> bytes, sha256 (and lines)
    extra: dict = field(default_factory=dict)  # keys this version does not know (version 1's inline lists): kept

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out

    def to_bytes(self) -> bytes:
        import orjson

        return orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def from_json(cls, data: Any, where: str = MANIFEST_NAME) -> Manifest:
        """Check the envelope (format, version, a list of shard entries with file names)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ManifestError(f"{where}: not an sftdata manifest (format is not {FORMAT!r})")
        version = data.get("format_version")
        if type(version) is not int or version not in READABLE_FORMAT_VERSIONS:
            raise ManifestError(f"{where}: format_version {version!r}; this sftdata reads versions "
                                f"{', '.join(map(str, READABLE_FORMAT_VERSIONS))}")
        if not isinstance(data.get("shards"), list):
            raise ManifestError(f"{where}: not an sftdata manifest (no `shards` list)")
        for entry in data["shards"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                raise ManifestError(f"{where}: a `shards` entry has no `file` name: {entry!r}")
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        return cls(**kwargs, extra={k: v for k, v in data.items() if k not in known})

    @property
    def shard_files(self) -> list[str]:
        return [s["file"] for s in self.shards]

    @property
    def packed(self) -> bool:
        return self.packing is not None


def loads_json(raw: bytes) -> Any:
    """orjson first (a version 1 manifest of a big run is megabytes); anything it
    refuses (NaN, integers beyond 64 bits) goes to ``json``, which decides what is an error."""
    import orjson

    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw.decode("utf-8"))


def read_manifest(folder: Folder | str, *, check_names: bool = True) -> Manifest:
    """The manifest of a finished folder; any reason it cannot be used is a ``ManifestError``.

    Read through the one opener (a regular file, at most the metadata limit), and with
    ``check_names`` every shard entry must be a shard name of this folder, listed once
    (``storage.layout.manifest_shard_names``): the refusal comes before any shard is opened.
    ``verify`` passes False to report such entries one by one instead.
    """
    from sftdata.errors import UnsafeFileError
    from sftdata.storage import Folder
    from sftdata.storage.layout import manifest_shard_names

    folder = folder if isinstance(folder, Folder) else Folder(folder)
    if not folder.remote and folder.local().exists() and not folder.local().is_dir():
        raise ManifestError(f"{folder}: not a folder")
    if not folder.exists():
        raise ManifestError(f"{folder}: no such folder")
    where = f"{folder}/{MANIFEST_NAME}"
    if folder.size(MANIFEST_NAME) is None and (folder.remote or not folder.local(MANIFEST_NAME).is_symlink()
                                              and not folder.local(MANIFEST_NAME).exists()):
        raise ManifestError(f"{folder}: no {MANIFEST_NAME} (not a finished `sftdata run` output folder)")
    try:
        data = loads_json(folder.read_bytes(MANIFEST_NAME))
    except UnsafeFileError as exc:
        raise ManifestError(str(exc)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{where}: cannot read the manifest: {exc}") from exc
    manifest = Manifest.from_json(data, where)
    if check_names:
        try:
            manifest_shard_names(manifest.shards, where)
        except UnsafeFileError as exc:
            raise ManifestError(str(exc)) from None
    return manifest


def build_manifest(settings: Settings, tokenizer: Tokenizer, plan: dict, shards: list[ShardRecord],
                   counts: RunCounts, schema: pa.Schema) -> Manifest:
    """The manifest of a finished run, from its plan, its committed shards and its counts."""
    from sftdata.stages.adapt.keys import top_names
    from sftdata.stages.render import Llama3Renderer
    from sftdata.stages.validate import schema_path

    renderer = Llama3Renderer.for_settings(settings)
    tok = tokenizer.describe()
    tok.pop("encoder")  # ids are the same whichever encoder ran; keep the manifest identical too
    tok.update(bos_id=tokenizer.bos_id, eot_id=tokenizer.eot_id, start_header_id=tokenizer.start_header_id,
               end_header_id=tokenizer.end_header_id, eom_id=tokenizer.eom_id,
               python_tag_id=tokenizer.python_tag_id, pad_id=tokenizer.pad_id,
               header_newline_ids=tokenizer.header_newline_ids)
    totals = {"rows": sum(s.rows for s in shards), "tokens": sum(s.tokens for s in shards),
              "trained_tokens": sum(s.trained_tokens for s in shards)}
    return Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        created_by=library_versions(),
        pipeline={**settings.output_settings(), "chunk_bytes": plan["chunk_bytes"],
                  "audit": {"min_trained_fraction": settings.min_trained_fraction,
                            "max_rejected_fraction": settings.max_rejected_fraction}},
        fingerprints={
            "schema": _sha(schema_path().read_bytes()),
            "template": renderer.fingerprint(),
            "tokenizer": tokenizer.fingerprint,
        },
        tokenizer=tok,
        inputs=[{"name": i["name"], "bytes": i["bytes"], "format": i["format"], "digest": i["digest"]}
                for i in plan["inputs"]],
        chunks=plan["chunks"],
        columns=[f.name for f in schema],
        shards=[s.to_json() for s in shards],
        counts={
            "records_read": counts.records_read,
            "records_written": counts.records_written,
            "blank_lines": counts.blank_lines,
            "rejected": dict(sorted(counts.rejected.items())),
            "unknown_keys": top_names(counts.unknown_keys),
            "special_text_records": counts.special_text_records,
            "truncated_records": counts.truncated_records,
            "duplicate_records": counts.duplicate_records,
            "repeated_ids": counts.repeated_ids,
        },
        totals=totals,
        packing=None if settings.packing == "none" else {
            "strategy": settings.packing, "max_length": settings.max_length,
            "conversations": counts.records_written,
            "efficiency": round(totals["tokens"] / (totals["rows"] * settings.max_length), 6) if totals["rows"] else 0.0,
        },
    )
