"""THREAD (RFC 5256): ORDEREDSUBJECT and REFERENCES over the parsed cache's fields.

REFERENCES is the RFC's algorithm step by step (its numbers in the helpers'
names): (1) link containers by References / In-Reply-To, (2) the root set,
(3) the id table dropped, (4) dummies pruned, (5) roots gathered by base
subject, (6) siblings sorted by sent date. Pure functions of the messages'
metadata; ``number`` turns a UID into what the response shows (the UID
itself for UID THREAD, else the sequence number).

Where the RFC leaves an order open, the order is the one the answer is
shown in: roots are gathered (step 5) earliest thread first, and a dummy's
"first child" is its earliest one, so the same mailbox always threads the
same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from postwarden.mail.sortkeys import (
    Subject,
    base_subject,
    message_ids,
    parse_subject,
    sent_date,
    thread_references,
)
from postwarden.protocol.imap.responses import ThreadTree
from postwarden.storage.mailbox import MessageMeta

SortKey = tuple[float, int]
"""(sent date as a UTC timestamp, UID): UID order is sequence order, the RFC's tie-break."""


def _field(meta: MessageMeta, name: str) -> str:
    for key, value in meta.headers:
        if key == name:
            return value
    return ""


def _sort_key(meta: MessageMeta) -> SortKey:
    """RFC 5256 §2.2: the Date field, else INTERNALDATE; ties by sequence number."""
    when = sent_date(_field(meta, "date") or None)
    return (when.timestamp() if when is not None else meta.internaldate), meta.uid


def ordered_subject(metas: Sequence[MessageMeta], number: Callable[[int], int]
                    ) -> tuple[ThreadTree, ...]:
    groups: dict[str, list[MessageMeta]] = {}
    keys = {meta.uid: _sort_key(meta) for meta in metas}  # a Date is parsed once
    for meta in sorted(metas, key=lambda m: keys[m.uid]):
        groups.setdefault(base_subject(_field(meta, "subject")).casefold(), []).append(meta)
    threads = sorted(groups.values(), key=lambda g: keys[g[0].uid])
    return tuple(_ordered_thread([number(m.uid) for m in g]) for g in threads)


def _ordered_thread(numbers: list[int]) -> ThreadTree:
    """The first message, and the rest as its children: (1 2) or (1 (2)(3))."""
    if len(numbers) == 2:
        return tuple(numbers)
    return (numbers[0], *((n,) for n in numbers[1:]))


@dataclass(eq=False, slots=True)
class _Container:
    """A message, or a dummy (``meta`` None) standing for one only referred to."""

    meta: MessageMeta | None = None
    key: SortKey = (0.0, 0)  # the message's, parsed once; a dummy's comes in step 6
    parent: _Container | None = None
    children: list[_Container] = field(default_factory=list)

    def adopt(self, child: _Container) -> None:
        """Make ``child`` (which has no parent) a child of this one, unless that
        would make a loop (step 1's "do not create a link that introduces a loop")."""
        if not _is_ancestor(child, self):
            child.parent = self
            self.children.append(child)

    def orphan(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None


def _is_ancestor(elder: _Container, node: _Container) -> bool:
    """True when ``elder`` is ``node`` or above it.

    Walks up from ``node`` and down from ``elder`` by turns and stops when either
    walk ends, so it costs about twice the smaller of ``node``'s depth and
    ``elder``'s subtree: linear for a mailbox threaded in order (a new message
    has no replies yet), where walking up alone is quadratic in a long chain.
    """
    up: _Container | None = node
    down = [elder]
    while up is not None and down:
        if up is elder:
            return True
        up = up.parent
        below = down.pop()
        if below is node:
            return True
        down.extend(below.children)
    return False


def _step1_link(metas: Sequence[MessageMeta]) -> list[_Container]:
    """Step 1: every container made, linked parent to child; in creation order."""
    table: dict[str, _Container] = {}
    made: list[_Container] = []

    def by_id(message_id: str) -> _Container:
        node = table.get(message_id)
        if node is None:  # a dummy until (and unless) its message comes
            node = table[message_id] = _Container()
            made.append(node)
        return node

    for meta in sorted(metas, key=lambda m: m.uid):  # sequence order: the first of duplicates
        fields = dict(reversed(meta.headers))  # the first of a repeated field
        own = message_ids(fields.get("message-id"))
        node = by_id(own[0]) if own else None
        if node is None or node.meta is not None:  # no id, or a duplicate: a unique id
            node = _Container()
            made.append(node)
        node.meta, node.key = meta, _sort_key(meta)
        chain = [by_id(ref) for ref in thread_references(fields.get("references"),
                                                         fields.get("in-reply-to"))]
        for parent, child in pairwise(chain):  # 1A: keep a link made earlier
            if child.parent is None:
                parent.adopt(child)
        node.orphan()  # 1B: the last reference (or none) is the parent
        if chain:
            chain[-1].adopt(node)
    return made


def _post_order(roots: Iterable[_Container]) -> list[_Container]:
    """Every container under ``roots``, children before their parents; no recursion,
    as one message's References can make a chain thousands deep."""
    out: list[_Container] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.children)
    out.reverse()
    return out


def _step4_prune(roots: list[_Container]) -> list[_Container]:
    """Step 4: empty dummies dropped; a dummy's children put in its place, except
    that a dummy at the root keeps its children when it has more than one."""
    for node in _post_order(roots):  # below the root, dummies give way to their children
        node.children = [kept for child in node.children
                         for kept in ((child,) if child.meta is not None else child.children)]
    return [kept for root in roots
            for kept in ((root,) if root.meta is not None or len(root.children) > 1
                         else root.children)]


def _step6_sort(roots: list[_Container]) -> None:
    """Step 6: siblings by sent date, children before parents, a dummy at its
    first (earliest) child's date."""
    keys: dict[int, SortKey] = {}
    for node in _post_order(roots):
        node.children.sort(key=lambda child: keys[id(child)])
        keys[id(node)] = node.key if node.meta is not None else keys[id(node.children[0])]
    roots.sort(key=lambda root: keys[id(root)])


def _thread_subject(root: _Container) -> Subject:
    """Step 5.B.i: the root's subject, or its first child's when it is a dummy."""
    meta = root.meta if root.meta is not None else root.children[0].meta
    assert meta is not None  # pruned: a dummy's children are messages
    subject = parse_subject(_field(meta, "subject"))
    return Subject(subject.base.casefold(), subject.reply)  # compared case-insensitively


def _step5_gather(roots: list[_Container]) -> list[_Container]:
    """Step 5: roots with one (non-empty) base subject merged into one thread."""
    subjects = {id(root): _thread_subject(root) for root in roots}
    table: dict[str, _Container] = {}
    for root in roots:  # 5B: a dummy wins, then a message that is not a reply
        subject = subjects[id(root)]
        held = table.get(subject.base)
        if subject.base and (held is None or (held.meta is not None and (
                root.meta is None or (subjects[id(held)].reply and not subject.reply)))):
            table[subject.base] = root
    slot = {id(root): at for at, root in enumerate(roots)}
    out: list[_Container | None] = list(roots)
    for root in roots:  # 5C
        subject = subjects[id(root)]
        held = table.get(subject.base)
        if held is None or held is root:  # (an empty subject is never in the table)
            continue
        out[slot[id(root)]] = None
        if held.meta is None and root.meta is None:
            held.children += root.children
        elif held.meta is None or (subject.reply and not subjects[id(held)].reply):
            held.children.append(root)
        else:  # two messages, neither the other's reply: side by side under a new dummy
            dummy = _Container(children=[held, root])
            out[slot[id(held)]] = table[subject.base] = dummy
            slot[id(dummy)] = slot[id(held)]
            subjects[id(dummy)] = subjects[id(held)]
    return [root for root in out if root is not None]


def _render(root: _Container, number: Callable[[int], int]) -> ThreadTree:
    """RFC 5256 §4's nesting: a run of only children is one list, (1 2 3), and a
    message with several children ends its list with theirs, (1 (2)(3 4)).

    Without recursion: runs are found top down, then rendered bottom up.
    """
    runs: list[tuple[_Container, tuple[int, ...], _Container]] = []
    heads = [root]
    while heads:
        head = node = heads.pop()
        numbers: list[int] = []
        while node.meta is not None:
            numbers.append(number(node.meta.uid))
            if len(node.children) != 1:
                break
            node = node.children[0]
        runs.append((head, tuple(numbers), node))  # ends at a dummy or a branch or a leaf
        heads.extend(node.children)
    done: dict[int, ThreadTree] = {}
    for head, run, end in reversed(runs):
        done[id(head)] = (*run, *(done.pop(id(child)) for child in end.children))
    return done[id(root)]


def references(metas: Sequence[MessageMeta], number: Callable[[int], int]
               ) -> tuple[ThreadTree, ...]:
    made = _step1_link(metas)
    roots = [node for node in made if node.parent is None]  # 2; 3: the table is gone
    roots = _step4_prune(roots)
    _step6_sort(roots)  # the order roots are gathered in, and dummies' first children
    roots = _step5_gather(roots)
    _step6_sort(roots)
    return tuple(_render(root, number) for root in roots)


def thread(algorithm: str, metas: Sequence[MessageMeta], number: Callable[[int], int]
           ) -> tuple[ThreadTree, ...]:
    if algorithm.upper() == "ORDEREDSUBJECT":
        return ordered_subject(metas, number)
    return references(metas, number)
