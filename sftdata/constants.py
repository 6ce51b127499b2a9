"""Constants shared across the package. The one place where the ignore index lives."""

# Label value that Hugging Face models and PyTorch's cross-entropy skip.
IGNORE_INDEX = -100

DEFAULT_DATE = "26 Jul 2024"
DEFAULT_MAX_LENGTH = 8192
FORMAT_VERSION = 2  # of manifest.json; 2: the per-record lists moved into files of their own
READABLE_FORMAT_VERSIONS = (1, 2)  # what read_manifest accepts (sftdata.sidecars reads version 1's inline lists)
# Decompressed bytes read from one .gz/.zst input at most: memory is bounded by the reader's buffers
# whatever this is; the limit bounds the time a bomb costs (16 GiB: a few minutes on 2 cores).
DEFAULT_MAX_DECOMPRESSED = 16 << 30
# Bytes of blank lines one input (one chunk of a split JSON Lines file) may hold: a newline bomb
# stops here instead of costing its whole decompressed size.
DEFAULT_MAX_BLANK = 64 << 20

# The names of an output folder live in sftdata.storage.layout; re-exported here for old imports.
from sftdata.storage.layout import AUDIT_NAME, MANIFEST_NAME, QUARANTINE_NAME, WORK_DIR  # noqa: E402

__all__ = ["IGNORE_INDEX", "DEFAULT_DATE", "DEFAULT_MAX_LENGTH", "FORMAT_VERSION", "READABLE_FORMAT_VERSIONS",
           "DEFAULT_MAX_DECOMPRESSED", "DEFAULT_MAX_BLANK",
           "AUDIT_NAME", "MANIFEST_NAME", "QUARANTINE_NAME", "WORK_DIR"]
