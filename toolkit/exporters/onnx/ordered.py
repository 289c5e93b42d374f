"""tf2onnx's graph optimizers made independent of the process's hashing.

tf2onnx's ``Graph`` keeps each tensor's consumers in a ``set`` of node names (``_output_to_consumers``) and
walks several other sets (of names, of ``Node`` objects); its optimizers (transposes, constant folding,
merging duplicated nodes) visit nodes in those sets' order, which follows the process's string hashing
(``PYTHONHASHSEED``, random per process) and object addresses. The result is an equivalent graph of another
shape: MobileNetV3Small's float ONNX had 251 nodes under one hash seed and 252 under another, and ResNet50's
named a transpose differently, so two exports of one model gave different bytes (and different int8 files,
timed as different files in benchmarks/PTQ.md). Replacing ``set`` in tf2onnx's graph module by a set that
iterates in insertion order makes the walk follow the graph's own order, whatever the process.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableSet


class InsertionOrderedSet(MutableSet):
    """A set that iterates in the order its elements were first added (a dict's keys), with the methods of
    ``set`` that tf2onnx's graph module calls."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable = ()):
        self._items = dict.fromkeys(items)

    def __contains__(self, item) -> bool:
        return item in self._items

    def __iter__(self):
        return iter(list(self._items))  # a copy: the callers add and remove while they walk

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"InsertionOrderedSet({list(self._items)!r})"

    def add(self, item) -> None:
        self._items[item] = None

    def discard(self, item) -> None:
        self._items.pop(item, None)

    def remove(self, item) -> None:
        del self._items[item]

    def pop(self):
        if not self._items:
            raise KeyError("pop from an empty set")
        item = next(iter(self._items))
        del self._items[item]
        return item

    def copy(self) -> InsertionOrderedSet:
        return InsertionOrderedSet(self._items)

    def update(self, *others: Iterable) -> None:
        for other in others:
            self._items.update(dict.fromkeys(other))

    def union(self, *others: Iterable) -> InsertionOrderedSet:
        result = self.copy()
        result.update(*others)
        return result

    def intersection(self, *others: Iterable) -> InsertionOrderedSet:
        keep = [_members(o) for o in others]
        return InsertionOrderedSet(i for i in self._items if all(i in k for k in keep))

    def difference(self, *others: Iterable) -> InsertionOrderedSet:
        drop = [_members(o) for o in others]
        return InsertionOrderedSet(i for i in self._items if not any(i in d for d in drop))

    def issubset(self, other: Iterable) -> bool:
        other = _members(other)
        return all(i in other for i in self._items)

    def issuperset(self, other: Iterable) -> bool:
        return all(i in self._items for i in other)

    @classmethod
    def _from_iterable(cls, it):  # what MutableSet's operators (|, &, -) build their result with
        return cls(it)


def _members(items: Iterable):
    """``items`` as something ``in`` is fast on."""
    return items if isinstance(items, (set, frozenset, InsertionOrderedSet)) else set(items)


def make_tf2onnx_deterministic() -> None:
    """Give tf2onnx's graph module the insertion-ordered set in place of the built-in one (its module globals
    are looked up before the builtins). Idempotent."""
    import tf2onnx.graph

    tf2onnx.graph.set = InsertionOrderedSet
