"""Alpaca records to ``messages`` records.

``{"instruction", "input"?, "output", "system"?, "history"?: [[user, assistant], ...]}``. The
instruction and input are joined with a blank line, the convention of the Alpaca data and of
LLaMA-Factory, so the same conversation gives the same rows whichever format it came in.
"""

from __future__ import annotations

from typing import Any

from sftdata.stages.records import Reject


def alpaca_to_messages(obj: Any, *, instruction_key: str = "instruction", input_key: str = "input",
                       output_key: str = "output", system_key: str = "system", history_key: str = "history") -> dict:
    """Map one Alpaca record; raises Reject with reason ``adapter_alpaca`` when it cannot."""
    if not isinstance(obj, dict):
        raise Reject("not_an_object", "a record must be a JSON object")
    if output_key not in obj and "response" in obj:  # a common variant (Dolly, many Alpaca exports)
        output_key = "response"
    if input_key not in obj and "context" in obj:
        input_key = "context"
    instruction, output = obj.get(instruction_key), obj.get(output_key)
    if not isinstance(instruction, str):
        raise Reject("adapter_alpaca", f"/{instruction_key}: expected a string", f"/{instruction_key}")
    if not isinstance(output, str):
        raise Reject("adapter_alpaca", f"/{output_key}: expected a string", f"/{output_key}")
    extra = obj.get(input_key)
    if extra is not None and not isinstance(extra, str):
        raise Reject("adapter_alpaca", f"/{input_key}: expected a string", f"/{input_key}")
    prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    messages: list[dict] = []
    system = obj.get(system_key)
    if isinstance(system, str) and system.strip():
        messages.append({"role": "system", "content": system})
    history = obj.get(history_key) or []
    if not isinstance(history, list):
        raise Reject("adapter_alpaca", f"/{history_key}: expected a list of [user, assistant] pairs", f"/{history_key}")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise Reject("adapter_alpaca", f"/{history_key}/{i}: expected [user, assistant] strings",
                         f"/{history_key}/{i}")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    out: dict = {"messages": messages}
    if "id" in obj:
        out["id"] = obj["id"]
    return out
