#!/usr/bin/env bash
# Byte identity of `sftdata run` across a code change.
#
#   INPUTS=/tmp/x-inputs benchmarks/identity_check.sh run DIR   # every case below into DIR/<case>/
#   benchmarks/identity_check.sh compare A B    # shards, quarantine, manifests, audit byte for byte
#
# It runs the tree it lies in (it changes to that tree's root, so `python -m sftdata.cli` imports
# that tree's package): run the old tree's copy, then the new tree's, with the same absolute INPUTS
# and DIRs (the manifests name the input paths; INPUTS is made on first use), then compare. The cases
# cover every template, both truncation modes (the cut of `truncate` at many places inside
# multibyte text and long pre-tokens), packing, dedupe, input formats, one and two workers,
# inputs below and above 1 MiB, a Hugging Face tokenizer folder and the pipeline's `encoder` key.
# Needs: PYTHON (default: python), and /work/shared/corpora/sft-mix.jsonl when present (else the
# corpus cases are skipped). Use your own SFTDATA_CACHE.
set -euo pipefail

PY=${PYTHON:-python}
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
CORPUS=${CORPUS:-/work/shared/corpora/sft-mix.jsonl}

make_inputs() {
  local in=$1
  mkdir -p "$in"
  local synth=tests.synth
  [ -f tests/synth.py ] || synth=sftdata.synth  # where the generator lived before issue 29
  cp examples/demo.jsonl "$in/demo.jsonl"
  "$PY" -m $synth 300 "$in/synth.jsonl" --seed 7 --broken 20
  "$PY" -m $synth 200 "$in/hostile.jsonl" --seed 3 --hostile
  "$PY" - "$in/long.jsonl" <<'EOF'
import json, random, sys
r = random.Random(5)
alphabet = ["a", "Z", "é", "ß", "中", "文", "😀", "👍🏽", "\u0301", " ", "  ", "\n", "\t", "7", "42", "!", "..", "'s", "x" * 9]
def text(n):
    parts = [r.choice(alphabet) for _ in range(n)]
    if r.random() < 0.3:  # a long pre-token: letters, symbols or spaces in a row
        parts.insert(r.randrange(len(parts) + 1), r.choice(["q", "+", " ", "中"]) * r.randrange(4000, 9000))
    return "".join(parts)
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for i in range(120):
        msgs = [{"role": "user", "content": text(r.randrange(10, 3000))},
                {"role": "assistant", "content": text(r.randrange(10, 3000))}]
        if r.random() < 0.4:
            msgs += [{"role": "user", "content": text(50)}, {"role": "assistant", "content": text(r.randrange(10, 800))}]
        f.write(json.dumps({"id": f"long-{i}", "messages": msgs}, ensure_ascii=r.random() < 0.5) + "\n")
    big = "中文 words 123 " * 150_000  # about 2.4 MB in one record
    f.write(json.dumps({"id": "huge", "messages": [{"role": "user", "content": "hi"},
                                                   {"role": "assistant", "content": big}]}) + "\n")
EOF
  "$PY" - "$in/cut.jsonl" <<'EOF'
import json, random, sys
r = random.Random(9)  # short prompts, long answers: `truncate` cuts inside the trained text
alphabet = ["a", "Z", "é", "中", "文", "。", "😀", "\u0301", " ", "  ", "\n", "\t", "7", "42", "!", "'s", "word", "12345"]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for i in range(150):
        answer = "".join(r.choice(alphabet) for _ in range(r.randrange(2000, 20000)))
        msgs = [{"role": "user", "content": "".join(r.choice(alphabet) for _ in range(r.randrange(1, 20)))},
                {"role": "assistant", "content": answer}]
        f.write(json.dumps({"id": f"cut-{i}", "messages": msgs}) + "\n")
EOF
  if [ -f "$CORPUS" ]; then
    head -n 500 "$CORPUS" > "$in/mix-en.jsonl"
    sed -n '1000,1400p' "$CORPUS" > "$in/mix-zh.jsonl"
    sed -n '2000,2350p' "$CORPUS" > "$in/mix-tools.jsonl"
    cp "$CORPUS" "$in/mix-all.jsonl"
  fi
  # a Hugging Face tokenizer folder (the built-in conversion, loaded as any other folder)
  "$PY" - "$in/hf-tok" <<'EOF'
import shutil, sys
from sftdata.tokenizer import load_tokenizer
tok = load_tokenizer()
tok.hf.save_pretrained(sys.argv[1])
EOF
  "$PY" - "$in" <<'EOF'
import json, sys
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
d = Path(sys.argv[1])
def loads(line):
    try:
        return json.loads(line)
    except ValueError:  # the generator's broken lines
        return None
recs = [loads(x) for x in (d / "synth.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
def plain_msgs(r):
    return (isinstance(r, dict) and isinstance(r.get("messages"), list) and not r.get("tools")
            and all(isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                    and isinstance(m.get("content"), str) and "weight" not in m for m in r["messages"])
            and all(not any(0xD800 <= ord(c) <= 0xDFFF for c in m["content"]) for m in r["messages"]))
plain = [r for r in recs if plain_msgs(r)]
role = {"system": "system", "user": "human", "assistant": "gpt"}
share = [{"id": r.get("id"), "conversations": [{"from": role[m["role"]], "value": m["content"]} for m in r["messages"]]}
         for r in plain]
(d / "sharegpt.json").write_text(json.dumps(share, ensure_ascii=False), encoding="utf-8")
alpaca = [{"instruction": r["messages"][-2]["content"], "input": "", "output": r["messages"][-1]["content"]}
          for r in plain if len(r["messages"]) >= 2 and r["messages"][-1]["role"] == "assistant"
          and r["messages"][-2]["role"] == "user"]
with open(d / "alpaca.jsonl", "w", encoding="utf-8") as f:
    f.writelines(json.dumps(a, ensure_ascii=False) + "\n" for a in alpaca)
pq.write_table(pa.Table.from_pylist(alpaca), d / "alpaca.parquet")
pq.write_table(pa.Table.from_pylist([{"id": r.get("id"), "messages": r["messages"]} for r in plain]),
               d / "messages.parquet")
with open(d / "pc.jsonl", "w", encoding="utf-8") as f:
    f.writelines(json.dumps({"prompt": a["instruction"], "completion": a["output"]}, ensure_ascii=False) + "\n"
                 for a in alpaca)
EOF
  printf 'version: 1\nstages:\n  render:\n    template: llama3.1\n    encoder: hf\n' > "$in/enc-hf.yaml"
  printf 'version: 1\nstages:\n  render:\n    template: llama3.2\n    encoder: tiktoken\n' > "$in/enc-tiktoken.yaml"
  printf 'version: 1\nstages:\n  render:\n    template: llama3.3\n    encoder: splintr\n' > "$in/enc-splintr.yaml"
}

run_case() {  # name, then the arguments of `sftdata run` after -o
  local name=$1
  shift
  "$PY" -m sftdata.cli run -o "$DIR/$name" "$@" > "$DIR/$name.log" 2>&1 || echo "exit $? ($name)" >> "$DIR/exits.txt"
  echo "$name done"
}

run_all() {
  DIR=$1
  local in=${INPUTS:?set INPUTS to a folder for the generated inputs, the same for both runs}
  mkdir -p "$DIR"
  : > "$DIR/exits.txt"
  [ -f "$in/demo.jsonl" ] || make_inputs "$in"
  run_case demo-32 -i "$in/demo.jsonl" -w 1
  run_case demo-auto-31 -i "$in/demo.jsonl" --input-format auto --template llama3.1 -w 2
  run_case synth-31-dedupe -i "$in/synth.jsonl" --template llama3.1 --dedupe exact -w 2
  run_case synth-3-packed -i "$in/synth.jsonl" --template llama3 --packing bfd --max-length 2048 -w 1
  run_case hostile-33 -i "$in/hostile.jsonl" --template llama3.3 --tools-in-system
  run_case long-trunc-300 -i "$in/long.jsonl" --truncation truncate --max-length 300 -w 2
  run_case long-trunc-4096 -i "$in/long.jsonl" --truncation truncate --max-length 4096 --template llama3.1
  run_case long-drop-300 -i "$in/long.jsonl" --max-length 300
  run_case cut-24 -i "$in/cut.jsonl" --truncation truncate --max-length 24
  run_case cut-64-packed -i "$in/cut.jsonl" --truncation truncate --max-length 64 --packing bfd --template llama3.1 -w 2
  run_case long-hf-trunc -i "$in/long.jsonl" --truncation truncate --max-length 500 --tokenizer "$in/hf-tok"
  run_case synth-hf -i "$in/synth.jsonl" --tokenizer "$in/hf-tok" --template llama3.3
  run_case enc-hf -i "$in/synth.jsonl" "$in/enc-hf.yaml"
  run_case enc-tiktoken -i "$in/hostile.jsonl" "$in/enc-tiktoken.yaml" --truncation truncate --max-length 200
  run_case enc-splintr -i "$in/synth.jsonl" "$in/enc-splintr.yaml" --packing bfd
  run_case fmt-sharegpt -i "$in/sharegpt.json" --input-format auto -w 2
  run_case fmt-alpaca -i "$in/alpaca.jsonl" --input-format alpaca --template llama3.1
  run_case fmt-parquet -i "$in/alpaca.parquet" -i "$in/messages.parquet" --input-format auto --dedupe exact
  run_case fmt-pc -i "$in/pc.jsonl" --input-format prompt_completion --template llama3.3
  if [ -n "${RAY:-}" ]; then  # RAY=1: a local Ray instance started by the run
    run_case ray-31 -i "$in/synth.jsonl" --template llama3.1 --executor ray --workers 2 --packing bfd --max-length 2048
  fi
  if [ -f "$in/mix-all.jsonl" ]; then
    run_case mix-en-trunc -i "$in/mix-en.jsonl" --truncation truncate --max-length 128 --template llama3.3
    run_case mix-zh-trunc -i "$in/mix-zh.jsonl" --truncation truncate --max-length 96 --template llama3
    run_case mix-tools-31 -i "$in/mix-tools.jsonl" --template llama3.1 --truncation truncate --max-length 512
    run_case mix-all-packed -i "$in/mix-all.jsonl" --packing bfd --max-length 1024 --truncation truncate --dedupe exact
    run_case mix-all-32 -i "$in/mix-all.jsonl" --template llama3.2 -w 2
  fi
}

compare() {
  "$PY" - "$1" "$2" <<'EOF'
import json, pathlib, sys
a, b = map(pathlib.Path, sys.argv[1:3])
def norm(path, root):
    data = path.read_bytes()
    if path.name == "audit.json":  # names the folder itself
        return data.replace(json.dumps(str(root)).encode(), b'"ROOT"')
    return data
def lists_moved(fa, fb):
    """None when both folders keep the same format; else whether B's list files hold A's lists."""
    ma, mb = (json.loads((f / "manifest.json").read_bytes()) for f in (fa, fb))
    if ma.get("format_version") == mb.get("format_version") or not (fb / "duplicates.jsonl").exists():
        return None
    def lines(name):
        return [json.loads(x) for x in (fb / name).read_text(encoding="utf-8").splitlines() if x.strip()]
    dups = lines("duplicates.jsonl")
    return (sorted(map(json.dumps, ma.get("duplicates", []))) == sorted(map(json.dumps, dups))
            and [d["id"] for d in lines("truncated_ids.jsonl")] == ma.get("truncated_ids", [])
            and sorted(d["id"] for d in lines("repeated_ids.jsonl")) == sorted(ma.get("repeated_ids", [])))


def key_diff(x, y, path=""):
    if isinstance(x, dict) and isinstance(y, dict):
        out = []
        for k in sorted(set(x) | set(y)):
            if k not in x or k not in y:
                out.append(f"{path}{k} ({'added' if k not in x else 'removed'})")
            else:
                out += key_diff(x[k], y[k], f"{path}{k}.")
        return out
    return [] if x == y else [path.rstrip(".") or "(value)"]


bad, n = [], 0
cases = sorted(p.name for p in a.iterdir() if p.is_dir())
for case in cases:
    fa, fb = a / case, b / case
    names = sorted(p.relative_to(fa).as_posix() for p in fa.rglob("*") if p.is_file())
    names_b = sorted(p.relative_to(fb).as_posix() for p in fb.rglob("*") if p.is_file()) if fb.is_dir() else []
    if names != names_b:
        bad.append(f"{case}: files differ: {sorted(set(names) ^ set(names_b))}")
    moved_ok = lists_moved(fa, fb)  # manifest format 1 lists -> format 2 list files (issue 31)
    if moved_ok is not None:
        bad.append(f"{case}: list files {'equal' if moved_ok else 'DIFFER from'} the old manifest's lists")
    for name in sorted(set(names) & set(names_b)):
        n += 1
        if norm(fa / name, fa) != norm(fb / name, fb):
            if name.endswith("manifest.json"):  # name the keys, so a new setting is told from a changed row
                ja, jb = json.loads((fa / name).read_bytes()), json.loads((fb / name).read_bytes())
                bad.append(f"{case}/{name} differs in: {', '.join(key_diff(ja, jb)) or '(key order)'}")
            else:
                bad.append(f"{case}/{name} differs")
for log in ("exits.txt",):
    if (a / log).read_bytes() != (b / log).read_bytes():
        bad.append(f"{log} differs")
print(f"{len(cases)} cases, {n} files compared; {len(bad)} difference(s)")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
}

case ${1:-} in
  run) run_all "$2" ;;
  compare) compare "$2" "$3" ;;
  *) echo "usage: $0 run DIR | compare A B" >&2; exit 2 ;;
esac
