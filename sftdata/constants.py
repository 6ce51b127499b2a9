"""Constants shared across the package. The one place where the ignore index lives."""

# Label value that Hugging Face models and PyTorch's cross-entropy skip.
IGNORE_INDEX = -100

DEFAULT_DATE = "26 Jul 2024"
DEFAULT_MAX_LENGTH = 8192
MANIFEST_NAME = "manifest.json"
QUARANTINE_NAME = "quarantine.jsonl"
AUDIT_NAME = "audit.json"
WORK_DIR = "_chunks"  # done-markers and quarantine parts of a run in progress
FORMAT_VERSION = 1
# Decompressed bytes read from one .gz/.zst input at most: memory is bounded by the reader's buffers
# whatever this is; the limit bounds the time a bomb costs (16 GiB: a few minutes on 2 cores).
DEFAULT_MAX_DECOMPRESSED = 16 << 30
