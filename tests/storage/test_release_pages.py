"""``release_pages``: a mapped file's read pages leave the process's resident memory, and the map stays usable."""

from __future__ import annotations

import sys

import pytest

from sftdata.storage.opener import map_regular, release_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")

SIZE = 32 << 20


def rss_file_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


def test_read_pages_are_let_go_and_read_again(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(range(256)) * (SIZE // 256))
    mapped = map_regular(path)
    before = rss_file_kib()
    assert sum(mapped[i + 1] for i in range(0, SIZE, 4096)) > 0  # touch every page
    touched = rss_file_kib()
    assert touched - before > (SIZE >> 10) // 2
    release_pages(mapped)
    assert rss_file_kib() - before < (SIZE >> 10) // 4
    assert mapped[SIZE - 1] == 255 and mapped[:4] == bytes([0, 1, 2, 3])  # still readable
    mapped.close()
    release_pages(mapped)  # a closed map, and an empty file's b"", are left alone
    release_pages(b"")
