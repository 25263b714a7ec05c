"""THREAD (RFC 5256): ORDEREDSUBJECT and REFERENCES over the parsed cache's fields.

REFERENCES follows the RFC's steps 1-4 and 6 (link by References and
In-Reply-To, prune empty containers, order siblings by sent date); step 5,
merging roots that share a base subject, is done for roots whose base
subject is non-empty, as the RFC does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from postwarden.mail.sortkeys import base_subject, message_ids, sent_date, thread_references
from postwarden.protocol.imap.responses import ThreadTree
from postwarden.storage.mailbox import MessageMeta


def _field(meta: MessageMeta, name: str) -> str:
    for key, value in meta.headers:
        if key == name:
            return value
    return ""


def _date(meta: MessageMeta) -> float:
    when = sent_date(_field(meta, "date") or None)
    return when.timestamp() if when is not None else meta.internaldate


def _tree(first: int, children: Sequence[ThreadTree]) -> ThreadTree:
    """(first child...) when one child, (first (a)(b)) when several (RFC 5256 §4)."""
    if len(children) == 1:
        return (first, *children[0])
    return (first, *children)


def ordered_subject(metas: Sequence[MessageMeta], number: Callable[[int], int]
                    ) -> tuple[ThreadTree, ...]:
    groups: dict[str, list[MessageMeta]] = {}
    for meta in sorted(metas, key=lambda m: (_date(m), m.uid)):
        groups.setdefault(base_subject(_field(meta, "subject")), []).append(meta)
    threads = sorted(groups.values(), key=lambda g: (_date(g[0]), g[0].uid))
    return tuple(_tree(number(g[0].uid), [(number(m.uid),) for m in g[1:]]) for g in threads)


@dataclass(eq=False)
class _Node:
    meta: MessageMeta | None = None
    parent: _Node | None = None
    children: list[_Node] = field(default_factory=list)

    def date(self) -> tuple[float, int]:
        if self.meta is not None:
            return _date(self.meta), self.meta.uid
        return min((c.date() for c in self.children), default=(0.0, 0))

    def ancestor_of(self, other: _Node) -> bool:
        node: _Node | None = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False


def _link(parent: _Node, child: _Node) -> None:
    if child.parent is not None or parent is child or child.ancestor_of(parent):
        return
    child.parent = parent
    parent.children.append(child)


def _prune(nodes: list[_Node], top: bool) -> list[_Node]:
    """Drop empty containers: their children take their place (RFC 5256 step 4),
    except a top-level one with several children, which keeps them together."""
    out: list[_Node] = []
    for node in nodes:
        node.children = _prune(node.children, False)
        if node.meta is not None or (top and len(node.children) > 1):
            out.append(node)
            continue
        for child in node.children:
            child.parent = node.parent
        out += node.children
    return out


def _render(node: _Node, number: Callable[[int], int]) -> ThreadTree:
    children = [_render(c, number) for c in sorted(node.children, key=_Node.date)]
    if node.meta is None:  # a dummy root: its children as siblings
        return tuple(children)
    return _tree(number(node.meta.uid), children)


def references(metas: Sequence[MessageMeta], number: Callable[[int], int]
               ) -> tuple[ThreadTree, ...]:
    table: dict[str, _Node] = {}
    for meta in sorted(metas, key=lambda m: m.uid):
        own = message_ids(_field(meta, "message-id"))
        message_id = own[0] if own else f"uid:{meta.uid}"
        node = table.get(message_id)
        if node is None or node.meta is not None:
            node = table[message_id if node is None else f"uid:{meta.uid}"] = _Node()
        node.meta = meta
        chain = thread_references(_field(meta, "references"), _field(meta, "in-reply-to"))
        previous: _Node | None = None
        for ref in chain:
            current = table.setdefault(ref, _Node())
            if previous is not None:
                _link(previous, current)
            previous = current
        if previous is not None and previous is not node:
            if node.parent is not None:
                node.parent.children.remove(node)
                node.parent = None
            _link(previous, node)
    roots = _prune([n for n in table.values() if n.parent is None], True)
    by_subject: dict[str, _Node] = {}
    merged: list[_Node] = []
    for root in sorted(roots, key=_Node.date):
        first_meta = root.meta or (root.children[0].meta if root.children else None)
        subject = base_subject(_field(first_meta, "subject")) if first_meta else ""
        if subject and subject in by_subject:
            first = by_subject[subject]
            root.parent = first
            first.children.append(root)
            continue
        if subject:
            by_subject[subject] = root
        merged.append(root)
    threads: list[ThreadTree] = []
    for root in sorted(merged, key=_Node.date):
        rendered = _render(root, number)
        threads.append(rendered)
    return tuple(threads)


def thread(algorithm: str, metas: Sequence[MessageMeta], number: Callable[[int], int]
           ) -> tuple[ThreadTree, ...]:
    if algorithm.upper() == "ORDEREDSUBJECT":
        return ordered_subject(metas, number)
    return references(metas, number)
