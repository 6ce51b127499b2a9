"""Open-Assistant message trees to ``messages`` records (``oasst_tree``).

The export shape: a node is ``{message_id, role: "prompter" | "assistant", text, rank?, replies:
[node, ...]}``; a line is a tree (``{message_tree_id, tree_state?, prompt: node}``) or a root node.

The rule, one conversation per tree: from the root, follow at each level the best-ranked reply,
the one with the lowest ``rank`` (replies without a rank come after ranked ones; ties go to the
earlier reply; replies marked ``deleted: true`` are never taken), until a node has no replies.
``prompter`` turns become ``user`` messages, ``assistant`` turns ``assistant`` messages. The
record's id is the tree's ``message_tree_id`` (else the root's ``message_id``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sftdata.stages.adapt.keys import KeySpec
from sftdata.stages.records import Reject

ROLES = {"prompter": "user", "assistant": "assistant"}
MAX_NODES = 100_000  # a tree is one record: bounded walk, never a recursion


def root_of(obj: Any) -> dict | None:
    """The root node of a tree record, or None when the record is not a tree."""
    if not isinstance(obj, dict):
        return None
    node = obj.get("prompt") if isinstance(obj.get("prompt"), dict) else obj
    if node.get("role") in ROLES and "text" in node and ("replies" in node or "message_id" in node):
        return node
    return None


def looks_like_tree(obj: dict) -> bool:
    return root_of(obj) is not None and "completion" not in obj


def _rank_key(item: tuple[int, Any]) -> tuple:
    i, node = item
    rank = node.get("rank") if isinstance(node, dict) else None
    ranked = isinstance(rank, (int, float)) and not isinstance(rank, bool)
    return (not ranked, rank if ranked else 0, i)


def best_path(root: dict) -> list[tuple[str, dict]]:
    """(pointer, node) along the best-ranked reply at each level, root first."""
    path = [("", root)]
    node = root
    while True:
        replies = node.get("replies")
        if replies is None:
            break
        ptr = path[-1][0] + "/replies"
        if not isinstance(replies, list):
            raise Reject("adapter_tree", f"{ptr}: expected a list of reply nodes", ptr)
        live = [(i, r) for i, r in enumerate(replies) if not (isinstance(r, dict) and r.get("deleted") is True)]
        if not live:
            break
        i, node = min(live, key=_rank_key)
        if not isinstance(node, dict):
            raise Reject("adapter_tree", f"{ptr}/{i}: expected a reply node", f"{ptr}/{i}")
        path.append((f"{ptr}/{i}", node))
        if len(path) > MAX_NODES:
            raise Reject("too_deep", f"{ptr}: more than {MAX_NODES} levels", ptr)
    return path


def tree_to_messages(obj: Any) -> dict:
    """The best-ranked conversation of one tree; raises Reject (``adapter_tree``, ``unknown_role``)."""
    root = root_of(obj)
    if root is None:
        raise Reject("adapter_tree", "not a message tree: expected {message_id, role, text, replies} "
                     "(or {prompt: node})", "")
    at_root = "" if root is obj else "/prompt"
    messages = []
    for ptr, node in best_path(root):
        ptr = at_root + ptr
        role = ROLES.get(node.get("role")) if isinstance(node.get("role"), str) else None
        if role is None:
            raise Reject("unknown_role", f"{ptr}/role: found {node.get('role')!r}, expected prompter or assistant",
                         f"{ptr}/role")
        if not isinstance(node.get("text"), str):
            raise Reject("adapter_tree", f"{ptr}/text: expected a string", f"{ptr}/text")
        messages.append({"role": role, "content": node["text"]})
    rid = obj.get("message_tree_id", root.get("message_id"))
    return {"messages": messages, **({"id": rid} if rid is not None else {})}


def _walk_tree(obj: Any) -> Iterator[tuple[str, dict, bool, str]]:
    """The record, then every node of the tree (depth first), each named ``/**`` for counting."""
    root = root_of(obj)
    if root is None:
        return
    if root is not obj:
        yield "", obj, False, ""
    stack, seen = [("" if root is obj else "/prompt", root)], 0
    while stack and seen < MAX_NODES:
        ptr, node = stack.pop()
        seen += 1
        if isinstance(node, dict):
            yield "/**", node, True, ptr
            replies = node.get("replies")
            if isinstance(replies, list):
                stack.extend(reversed([(f"{ptr}/replies/{i}", r) for i, r in enumerate(replies)]))


TREE_KEYS = KeySpec(frozenset({"message_tree_id", "prompt"}),
                    frozenset({"message_id", "role", "text", "rank", "replies", "deleted"}), walk=_walk_tree)
