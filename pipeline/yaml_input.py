"""Reading a search-space YAML file without trusting it: bounded in size, nesting and alias
expansion, strict UTF-8, and refusing duplicate keys. Every problem is a one-line `UserError`.

Why the bounds: `yaml.safe_load` is safe from code execution but not from exhaustion. It reads
a whole file (`/dev/zero` never ends), nests by recursion (deep `[[[...]]]` is a RecursionError)
and shares aliased nodes, so a few hundred bytes of nested aliases ("billion laughs") become a
value whose traversal by validation or error messages never ends. A study file is a few hundred
bytes of a few dozen nodes, so the limits below are far from anything a real space needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import UserError

MAX_BYTES = 1_000_000
MAX_DEPTH = 32  # nested mappings/lists; a study file uses 4
MAX_NODES = 100_000  # scalars and collections, aliases counted as the nodes they stand for

# libyaml's parser when PyYAML was built with it (faster on large hostile input); else Python's.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names the same key twice (PyYAML would silently keep the last value)."""


class StrictLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """yaml's safe loader, but a mapping that repeats a key is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            # `<<: *base` merges may legitimately repeat keys the mapping then overrides.
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node,
                                                                            yaml.ScalarNode):
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:  # unhashable: the base constructor reports it
                continue
            if repeated:
                raise DuplicateKeyError(None, None, f"duplicate key {key!r}",
                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> tuple[Any, bytes]:
    """The parsed content of `path` and the bytes it was parsed from (for the content hash)."""
    content = _read_bounded(path)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{content[exc.start]:02x} at offset "
                        f"{exc.start}); expected a YAML file saved as UTF-8") from None
    try:
        _check_shape(path, text)
        return yaml.load(text, Loader=StrictLoader), content  # noqa: S506 (a safe loader)
    except DuplicateKeyError as exc:
        raise UserError(f"{path}: {exc.problem}{_line(exc)}; expected each key once in a "
                        "mapping (YAML would silently keep the last)") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or ""
        detail = f" ({problem})" if problem else ""
        raise UserError(f"{path}: not valid YAML{_line(exc)}{detail}; expected a mapping of "
                        "keys") from None


def _read_bounded(path: Path) -> bytes:
    """At most MAX_BYTES + 1 bytes: enough to tell that a file is too large without reading
    all of it (a device such as /dev/zero has no end)."""
    try:
        with open(path, "rb") as handle:
            content = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or exc
        raise UserError(f"{path}: cannot read ({reason}); expected a YAML file") from None
    if len(content) > MAX_BYTES:
        raise UserError(f"{path}: larger than {MAX_BYTES:,} bytes; expected a search-space "
                        "YAML file (a few hundred bytes)")
    return content


def _check_shape(path: Path, text: str) -> None:
    """Walk the parser's events (no recursion, nothing built) and refuse nesting deeper than
    MAX_DEPTH, more than MAX_NODES nodes once aliases are expanded, or an alias inside the
    node it names (a cycle, which never ends when expanded)."""
    sizes: dict[str, int] = {}  # anchor -> nodes of its expanded subtree
    open_nodes: list[tuple[str | None, int]] = []  # (anchor, nodes counted before it)
    total = 0
    for event in yaml.parse(text, Loader=StrictLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append((event.anchor, total))
            total += 1
            if len(open_nodes) > MAX_DEPTH:
                raise UserError(f"{path}: nested deeper than {MAX_DEPTH} levels at line "
                                f"{event.start_mark.line + 1}; expected a search space "
                                "(mappings and lists a few levels deep)")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = total - before
        elif isinstance(event, yaml.ScalarEvent):
            total += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_nodes):
                raise UserError(f"{path}: alias *{event.anchor} at line "
                                f"{event.start_mark.line + 1} refers to a node that contains "
                                "it; expected aliases to finished nodes only")
            total += sizes.get(event.anchor, 1)  # an unknown anchor: the composer says so
        if total > MAX_NODES:
            raise UserError(f"{path}: more than {MAX_NODES:,} YAML nodes once aliases are "
                            f"expanded (at line {event.start_mark.line + 1}); expected a "
                            "search space of a few dozen values (are aliases nested?)")


def _line(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f" at line {mark.line + 1}" if mark is not None else ""
