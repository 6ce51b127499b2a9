"""Model folders are checked before anything is built from them (issue 27): a config too large for
the memory at hand, pickled weights and remote code are refused with one line, exit 2."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sftdata.cli import main
from sftdata.training.model_check import ModelRefused, check_model_folder, estimated_parameters
from tests.batching_data import prepare, skewed_records

TINY = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
        "tie_word_embeddings": True}


class Harmless:
    pass


def model_folder(tmp_path: Path, name: str, config: dict | str, files: dict[str, bytes] | None = None) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    for file, data in (files or {"model.safetensors": b"\0" * 8}).items():
        (folder / file).write_bytes(data)
    return folder


HOSTILE = {
    "huge_vocab": ({**TINY, "vocab_size": 2**31}, None, "parameters"),
    "million_layers": ({**TINY, "num_hidden_layers": 10**6}, None, "parameters"),
    "pickled_weights": (TINY, {"pytorch_model.bin": pickle.dumps(Harmless())}, "pickled (pytorch_model.bin)"),
    "remote_code": ({**TINY, "auto_map": {"AutoModelForCausalLM": "modeling_evil.EvilModel"}}, None,
                    "auto_map asks to run the folder's own Python code"),
    "not_json": ("{vocab_size: 10", None, "not valid JSON"),
    "string_size": ({**TINY, "hidden_size": "64"}, None, "hidden_size must be a positive integer"),
    "negative_layers": ({**TINY, "num_hidden_layers": -1}, None, "num_hidden_layers must be a positive integer"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_folder_is_refused_in_one_line(tmp_path, case):
    config, files, words = HOSTILE[case]
    with pytest.raises(ModelRefused) as info:
        check_model_folder(str(model_folder(tmp_path, case, config, files)), available=64 << 30)
    assert words in str(info.value) and "\n" not in str(info.value) and info.value.exit_code == 2


def test_the_estimate_is_close_to_the_tiny_llamas_count():
    # builtin:tiny-llama3 has 8,290,624 parameters: 128256 x 64 tied embedding, two layers of
    # 4 x 64^2 attention + 3 x 64 x 128 MLP + 2 x 64 norm weights, a final norm of 64
    assert estimated_parameters(TINY, "config.json") == 8_290_624 - 2 * 128 - 64


def test_the_memory_check_uses_what_is_available(tmp_path):
    folder = model_folder(tmp_path, "m", TINY)
    check_model_folder(str(folder), available=1 << 30)  # 33 MB of float32 weights
    with pytest.raises(ModelRefused, match="of memory available"):
        check_model_folder(str(folder), available=16 << 20)
    check_model_folder(str(folder), dtype="bfloat16", available=20 << 20)  # half the bytes fit


def test_a_path_that_is_no_folder_is_refused_and_a_hub_id_left_to_transformers(tmp_path):
    for spec, words in ((str(tmp_path / "nope"), "no such model folder"), (str(tmp_path / "f"), "not a folder")):
        (tmp_path / "f").touch()
        with pytest.raises(ModelRefused, match=words):
            check_model_folder(spec)
    check_model_folder("meta-llama/Llama-3.2-1B")  # nothing read, nothing refused here
    check_model_folder("builtin:tiny-llama3")


def test_remote_code_is_allowed_when_asked_for(tmp_path):
    folder = model_folder(tmp_path, "m", {**TINY, "auto_map": {"AutoConfig": "x.Y"}})
    check_model_folder(str(folder), trust_remote_code=True, available=1 << 30)


def test_safetensors_beside_a_pickle_are_what_is_loaded(tmp_path):
    folder = model_folder(tmp_path, "m", TINY, {"model.safetensors": b"\0", "pytorch_model.bin": b"\0"})
    check_model_folder(str(folder), available=1 << 30)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("models"), skewed_records(12, seed=5), "data")


@pytest.mark.parametrize("command", ["plan", "train"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_plan_and_train_refuse_before_building(tmp_path, data, command, case):
    config, files, words = HOSTILE[case]
    folder = model_folder(tmp_path, case, config, files)
    args = [str(data), "--model", str(folder)] + (["--output-dir", str(tmp_path / "out")] if command == "train" else [])
    started = time.perf_counter()
    res = CliRunner().invoke(main, [command, *args])
    assert res.exit_code == 2, (res.output, res.exception)
    assert res.output.count("\n") == 1 and words in res.output and "Traceback" not in res.output, res.output
    assert time.perf_counter() - started < 30  # nothing allocated (the million layers took 26 s before a MemoryError)
    assert not (tmp_path / "out").exists()
