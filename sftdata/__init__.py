"""sftdata: chat fine-tuning records to Llama-3 token ids and response-only labels, as audited Arrow shards.

The Python API (docs/python-api.md): ``encode`` one record, ``map_fn`` / ``encode_dataset`` for a
``datasets.Dataset``, ``run`` a pipeline, ``audit_data`` a folder or an in-memory dataset, ``load`` a
prepared folder after verifying it, ``validate`` input files. Importing ``sftdata`` loads no heavy
library (numpy, pyarrow, datasets, torch): each function imports what it needs when called.
"""

from sftdata.api import (
    EncodedRow,
    Options,
    Prepared,
    Validation,
    audit_data,
    encode,
    load,
    pipeline_settings,
    run,
    validate,
)
from sftdata.api_batch import EncodedDataset, MapFn, encode_dataset, map_fn
from sftdata.errors import (
    FolderNotVerified,
    RecordRejected,
    SftdataError,
    UsageError,
)
from sftdata.version import __version__

__all__ = [
    "EncodedDataset",
    "EncodedRow",
    "FolderNotVerified",
    "MapFn",
    "Options",
    "Prepared",
    "RecordRejected",
    "SftdataError",
    "UsageError",
    "Validation",
    "__version__",
    "audit_data",
    "encode",
    "encode_dataset",
    "load",
    "map_fn",
    "pipeline_settings",
    "run",
    "validate",
]
