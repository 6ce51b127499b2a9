"""The manifest's fast paths give what the slow ones gave: library versions and reading."""

from __future__ import annotations

import json
from importlib import metadata

import pytest

from sftdata import manifest as mf
from sftdata.errors import ManifestError


def test_library_versions_equal_importlib_metadata():
    got = mf.library_versions()
    for lib in mf._LIBS:
        try:
            expected = metadata.version(lib)
        except metadata.PackageNotFoundError:
            expected = "absent"
        assert got[lib] == expected, lib
    assert set(got) == {"sftdata", "python", *mf._LIBS}


def test_a_library_not_on_the_dist_info_path_is_asked_of_metadata(monkeypatch):
    monkeypatch.setattr(mf, "_dist_info_versions", lambda: {})
    assert mf.library_versions()["numpy"] == metadata.version("numpy")
    monkeypatch.setattr(mf, "_LIBS", ("no-such-library-xyz",))
    assert mf.library_versions()["no-such-library-xyz"] == "absent"


def test_json_orjson_refuses_still_reads_and_broken_json_is_an_error(tmp_path):
    assert mf.loads_json(b'{"a": NaN, "b": 123456789012345678901234567890}')["b"] == 123456789012345678901234567890
    assert mf.loads_json(b'{"a": [1, 2.5, "x"]}') == json.loads('{"a": [1, 2.5, "x"]}')
    (tmp_path / "manifest.json").write_text('{"format": ')
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        mf.read_manifest(str(tmp_path))
