"""Open-Assistant message trees to ``messages`` records (``oasst_tree``).

The export shape: a node is ``{message_id, role: "prompter" | "assistant", text, rank?, replies:
[node, ...]}``; a line is a tree (``{message_tree_id, tree_state?, prompt: node}``) or a root node.

The rule, one conversation per tree: from the root, follow at each level the best-ranked reply,
the one with the lowest ``rank`` (replies without a rank come after ranked ones; ties go to the
earlier reply; replies marked ``deleted: true`` are never taken), until a node has no replies.
``prompter`` turns become ``user`` messages, ``assistant`` turns ``assistant`` messages. The
record's id is the tree's ``message_tree_id`` (else the root's ``message_id``).

``tree_paths: all`` instead gives one conversation per root-to-leaf path (depth first, replies in
their order, deleted ones skipped), each its own record with the id ``<tree id>/<k>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sftdata.stages.adapt.keys import KeySpec
from sftdata.stages.records import Reject

ROLES = {"prompter": "user", "assistant": "assistant"}
MAX_NODES = 100_000  # a tree is one record: bounded walk, never a recursion
MAX_PATHS = 10_000  # tree_paths: all


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


def _live_replies(node: dict, ptr: str) -> list[tuple[int, dict]]:
    """(index, reply) of a node's replies that may be taken: not ``deleted: true``."""
    replies = node.get("replies")
    if replies is None:
        return []
    if not isinstance(replies, list):
        raise Reject("adapter_tree", f"{ptr}/replies: expected a list of reply nodes", f"{ptr}/replies")
    live = []
    for i, r in enumerate(replies):
        if not isinstance(r, dict):
            raise Reject("adapter_tree", f"{ptr}/replies/{i}: expected a reply node", f"{ptr}/replies/{i}")
        if r.get("deleted") is not True:
            live.append((i, r))
    return live


def best_path(root: dict) -> list[tuple[str, dict]]:
    """(pointer, node) along the best-ranked reply at each level, root first."""
    path = [("", root)]
    while True:
        ptr, node = path[-1]
        live = _live_replies(node, ptr)
        if not live:
            return path
        i, node = min(live, key=_rank_key)
        path.append((f"{ptr}/replies/{i}", node))
        if len(path) > MAX_NODES:
            raise Reject("too_deep", f"{ptr}: more than {MAX_NODES} levels", ptr)


def all_paths(root: dict) -> list[list[tuple[str, dict]]]:
    """Every root-to-leaf path ((pointer, node) lists), depth first, replies in their order."""
    paths: list[list[tuple[str, dict]]] = []
    stack = [[("", root)]]
    while stack:
        path = stack.pop()
        ptr, node = path[-1]
        live = _live_replies(node, ptr)
        if not live:
            paths.append(path)
        stack.extend(path + [(f"{ptr}/replies/{i}", r)] for i, r in reversed(live))
        if len(paths) + len(stack) > MAX_PATHS:
            raise Reject("adapter_tree", f"more than {MAX_PATHS} root-to-leaf paths in one tree", "")
    return paths


def tree_id(obj: dict, root: dict) -> Any:
    return obj.get("message_tree_id", root.get("message_id"))


def path_messages(obj: dict, root: dict, path: list[tuple[str, dict]]) -> list[dict]:
    """The messages of one path; raises Reject (``unknown_role``, ``adapter_tree``)."""
    at_root = "" if root is obj else "/prompt"
    messages = []
    for ptr, node in path:
        ptr = at_root + ptr
        role = ROLES.get(node.get("role")) if isinstance(node.get("role"), str) else None
        if role is None:
            raise Reject("unknown_role", f"{ptr}/role: found {node.get('role')!r}, expected prompter or assistant",
                         f"{ptr}/role")
        if not isinstance(node.get("text"), str):
            raise Reject("adapter_tree", f"{ptr}/text: expected a string", f"{ptr}/text")
        messages.append({"role": role, "content": node["text"]})
    return messages


def _root(obj: Any) -> dict:
    root = root_of(obj)
    if root is None:
        raise Reject("adapter_tree", "not a message tree: expected {message_id, role, text, replies} "
                     "(or {prompt: node})", "")
    return root


def tree_to_messages(obj: Any) -> dict:
    """The best-ranked conversation of one tree; raises Reject (``adapter_tree``, ``unknown_role``)."""
    root = _root(obj)
    rid = tree_id(obj, root)
    return {"messages": path_messages(obj, root, best_path(root)), **({"id": rid} if rid is not None else {})}


def tree_paths_of(obj: Any) -> tuple[Any, list[Any]]:
    """``tree_paths: all``: (the tree's id or None, one messages record per root-to-leaf path, no
    ids: the caller numbers them); a path that cannot be converted is its ``Reject``. Raises
    Reject when the tree cannot be walked at all."""
    root = _root(obj)
    out: list[Any] = []
    for path in all_paths(root):
        try:
            out.append({"messages": path_messages(obj, root, path)})
        except Reject as r:
            out.append(r)
    return tree_id(obj, root), out


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
