"""What a run's process imports: the chunk path must not pull in pandas (pyarrow's ``to_numpy``
and ``pa.array(ndarray)`` do; half a second in every worker on this machine)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import write_jsonl
from tests.synth import generate_records

SCRIPT = """
import sys
from sftdata import config, runner
settings = config.settings_from_dict({}, overrides={"audit_enabled": False, "packing": sys.argv[3]})
runner.run_pipeline(settings, [sys.argv[1]], sys.argv[2], workers=1)
print(sorted(m for m in ("pandas", "torch", "transformers", "datasets") if m in sys.modules))
"""


def test_a_run_imports_no_pandas_torch_or_transformers(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", generate_records(40, seed=71))
    for packing in ("none", "bfd"):
        r = subprocess.run([sys.executable, "-c", SCRIPT, str(src), str(tmp_path / packing), packing],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout
