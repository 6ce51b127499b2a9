#!/usr/bin/env bash
# Builds one virtual environment per trainer, so that each trainer's own
# dataset and collator code can read sftdata's exports without its pins
# touching the project's own environment. Venvs are cached under
# $SFTDATA_VENVS (default /root/.cache/sftdata-venvs) and reused when the
# marker file .ok is present. torch is installed first from the local CPU
# wheel so that pip does not fetch a CUDA build; a trainer that pins another
# torch wins, and `pip list` in the log records what it pulled.
#
# Usage: tests/interop/build_venvs.sh [NAME...]   (default: the fast ones)
# Measured here (2 shared cores): torchtune 132 s, streaming 255 s, olmocore 388 s, litgpt 523 s,
# llamafactory 738 s (pip pulls torch 2.14.1 over the CPU build), axolotl 1,347 s.
# axolotl 0.20+ needs Python >= 3.12; 0.19.0 is the newest for 3.11. llmfoundry: pip's resolver
# backtracked for 27 min and was stopped. megatronbridge: 0.4+ need Python 3.12, and the package
# imports transformer_engine (a CUDA build), so it does not import on a CPU machine.
# Names: torchtune streaming llamafactory axolotl llmfoundry olmocore
#        megatronbridge litgpt
set -u
ROOT=${SFTDATA_VENVS:-/root/.cache/sftdata-venvs}
PY=${SFTDATA_VENV_PYTHON:-python3}
mkdir -p "$ROOT"

packages_for() {
  case "$1" in
    torchtune) echo "torch==2.13.0 | torchtune==0.6.1 torchao==0.11.0 datasets" ;;
    streaming) echo "torch==2.13.0 | mosaicml-streaming==0.13.0" ;;
    llamafactory) echo "torch==2.13.0 | llamafactory==0.9.5" ;;
    axolotl) echo "torch==2.13.0 | axolotl==0.19.0" ;;
    llmfoundry) echo "torch==2.13.0 | llm-foundry==0.22.0" ;;
    olmocore) echo "torch==2.13.0 | ai2-olmo-core==3.0.0" ;;
    megatronbridge) echo "torch==2.13.0 | megatron-bridge==0.6.2" ;;
    litgpt) echo "torch==2.13.0 | litgpt==0.5.13" ;;
    *) echo "unknown venv $1" >&2; return 1 ;;
  esac
}

build() {
  local name=$1 dir="$ROOT/$1" log="$ROOT/$1.log" spec first rest start
  if [ -f "$dir/.ok" ]; then echo "$name: cached ($dir)"; return 0; fi
  spec=$(packages_for "$name") || return 1
  first=${spec%%|*}; rest=${spec#*|}
  start=$(date +%s)
  rm -rf "$dir"
  {
    echo "== $name: $(date -u +%FT%TZ)"
    "$PY" -m venv "$dir" &&
    "$dir/bin/pip" install -q --upgrade pip wheel setuptools &&
    { [ -z "${first// }" ] || "$dir/bin/pip" install $first; } &&
    "$dir/bin/pip" install $rest
  } >"$log" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - start ))
  "$dir/bin/pip" list >>"$log" 2>&1 || true
  if [ $rc -eq 0 ]; then
    touch "$dir/.ok"
    echo "$name: ok in ${took}s, torch $("$dir/bin/pip" show torch 2>/dev/null | sed -n 's/^Version: //p')" | tee -a "$log"
  else
    echo "$name: FAILED (rc $rc) after ${took}s; see $log" | tee -a "$log"
  fi
  return $rc
}

names=("$@")
[ ${#names[@]} -eq 0 ] && names=(torchtune streaming llamafactory)
status=0
for n in "${names[@]}"; do build "$n" || status=1; done
exit $status
