"""Property-based tests: whatever the lines, no crash, nothing lost, no control token from content,
and the same bytes on a re-run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftdata.config import settings_from_dict
from tests.conftest import run_committed

SPECIALS = ["<|eot_id|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
            "<|python_tag|>", "<|reserved_special_token_5|>"]
text = st.one_of(st.text(max_size=40), st.sampled_from(SPECIALS),
                 st.lists(st.one_of(st.text(max_size=8), st.sampled_from(SPECIALS)), max_size=5).map("".join))
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "ipython", "bot"]),
     "content": st.one_of(text, st.none(), st.integers())},
    optional={"weight": st.sampled_from([0, 1, 2])},
)
record = st.fixed_dictionaries({"messages": st.lists(message, min_size=0, max_size=5)},
                               optional={"id": st.text(max_size=10)})
line = st.one_of(
    record.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.binary(max_size=60),
    st.just(b""),
    st.just(b'{"messages": [{"role": "user", "content": "\\ud83d"}, {"role": "assistant", "content": "x"}]}'),
)


def _run(lines: list[bytes], out: Path) -> dict:
    src = out.parent / "in.jsonl"
    src.write_bytes(b"\n".join(x.replace(b"\n", b" ") for x in lines) + b"\n")
    s = settings_from_dict({}, overrides={"chunk_size": 2048})
    s.audit_enabled = False
    return run_committed(s, [str(src)], out, workers=1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(line, min_size=1, max_size=25))
def test_any_lines_no_crash_nothing_lost_no_control_tokens(lines):
    with tempfile.TemporaryDirectory() as d:
        m = _run(lines, Path(d) / "a")
        c = m["counts"]
        non_blank = sum(1 for x in lines if x.replace(b"\n", b" ").strip())
        assert c["records_read"] == non_blank
        assert c["records_written"] + sum(c["rejected"].values()) == c["records_read"]
        # JSON Lines split on "\n" only: U+0085 and U+2028 inside strings are not line ends
        quarantined = (Path(d) / "a" / "quarantine.jsonl").read_text().split("\n")[:-1] or []
        assert len(quarantined) == sum(c["rejected"].values())
        tok = m["tokenizer"]
        for shard in m["shards"]:
            table = pa.ipc.open_stream(pa.memory_map(str(Path(d) / "a" / shard["file"]))).read_all()
            for ids in table["input_ids"].to_pylist():
                arr = np.array(ids)
                assert arr[0] == tok["bos_id"] and (arr == tok["bos_id"]).sum() == 1
                n_start = (arr == tok["start_header_id"]).sum()
                assert n_start == (arr == tok["end_header_id"]).sum() == (arr == tok["eot_id"]).sum()
                assert not np.isin(arr, [tok["eom_id"], tok["python_tag_id"]]).any()
                assert not ((arr >= 128000) & ~np.isin(arr, [tok["bos_id"], tok["start_header_id"],
                                                             tok["end_header_id"], tok["eot_id"]])).any()
        again = _run(lines, Path(d) / "b")
        assert again == m
        for shard in m["shards"]:
            assert (Path(d) / "a" / shard["file"]).read_bytes() == (Path(d) / "b" / shard["file"]).read_bytes()
