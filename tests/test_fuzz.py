"""A bounded-time mutation fuzzer over the record parser and validator.

Starts from valid records and flips, truncates, duplicates and splices bytes, then runs the whole
record path (parse, schema, semantic rules, render, tokenize, label, hash); the only allowed
outcome besides success is a ``Reject`` with a reason. Runs for ``SFTDATA_FUZZ_SECONDS`` (default
15) so CI time stays bounded; the seed is fixed (``SFTDATA_FUZZ_SEED`` to vary it) so a failure
replays.
"""

from __future__ import annotations

import json
import os
import random
import time

from sftdata.config import settings_from_dict
from sftdata.process.record import RecordProcessor, conversation_hashes
from sftdata.stages.records import Reject
from sftdata.stages.validate import parse_json
from tests.synth import generate_records

TOKENS = [b"{", b"}", b"[", b"]", b'"', b",", b":", b"null", b"\\u0000", b"\\ud800", b"\xff", b"\x00",
          b'"role"', b'"content"', b'"tool_calls"', b'"assistant"', b"1e999", b"-0", b"[" * 50]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op == 1:
            del b[pos:]
        elif op == 2:
            b[pos:pos] = rng.choice(TOKENS)
        elif op == 3 and b:
            end = min(len(b), pos + rng.randint(1, 20))
            b[pos:pos] = b[pos:end]
        else:
            del b[pos:pos + rng.randint(1, 10)]
    return bytes(b)


def test_fuzz_parser_and_validator():
    seconds = float(os.environ.get("SFTDATA_FUZZ_SECONDS", "15"))
    seed = int(os.environ.get("SFTDATA_FUZZ_SEED", "20261129"))
    print(f"fuzz seed {seed}")
    rng = random.Random(seed)
    corpus = [json.dumps(r, ensure_ascii=False).encode() for r in generate_records(200, seed=seed % 1000)]
    processors = {t: RecordProcessor(settings_from_dict({}, overrides={"template": t, "max_length": 512}))
                  for t in ("llama3", "llama3.1", "llama3.2")}
    deadline = time.monotonic() + seconds
    runs = accepted = 0
    while time.monotonic() < deadline:
        data = mutate(rng, rng.choice(corpus))
        runs += 1
        try:
            obj = parse_json(data)
            for proc in processors.values():  # the whole record path: adapt, validate, render, label, hash
                try:
                    conv = proc.conversation(obj, "fuzz", 1, "messages")
                    proc.encode(conv)
                    conversation_hashes(conv)
                except Reject:
                    pass
            accepted += 1
        except Reject as r:
            assert r.reason and r.message
        except Exception as exc:  # pragma: no cover - a crash is the finding
            raise AssertionError(f"seed {seed}: {type(exc).__name__}: {exc} on {data[:200]!r}") from exc
    assert runs > 200
