"""Reading a manifest's YAML: exactly the values ``yaml.safe_load`` gives, and the line of every key.

Values come from PyYAML's own safe constructor (anchors, aliases, ``<<`` merge keys and
tags behave as in ``yaml.safe_load``). Lines come from a walk of the composed nodes. That
walk also bounds the size of the document once aliases are expanded, so a small file of
nested aliases (a "billion laughs") is refused at once instead of taking minutes and
gigabytes, and it notes keys given twice in one mapping (the last one wins, as in
``yaml.safe_load``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from scalable.manifest.issues import KeyPath, ManifestIssue

__all__ = ["MAX_DEPTH", "MAX_VALUES", "Lines", "YamlSource", "read_yaml"]

#: Most values (mapping entries and list items, aliases counted as often as they are used) a
#: manifest may hold.
MAX_VALUES: Final = 100_000
#: Deepest nesting of mappings and lists a manifest may have.
MAX_DEPTH: Final = 64
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


class Lines:
    """The 1-based line of each key path; a path without its own line takes its parent's."""

    def __init__(self, lines: dict[KeyPath, int] | None = None) -> None:
        self._lines: dict[KeyPath, int] = dict(lines or {})

    def of(self, path: KeyPath) -> int | None:
        """Return the line of ``path`` or of its nearest ancestor that has one."""
        probe = path
        while True:
            line = self._lines.get(probe)
            if line is not None or not probe:
                return line
            probe = probe[:-1]

    def set(self, path: KeyPath, line: int) -> None:
        """Record the line of ``path``."""
        self._lines[path] = line

    def grafted(self, source: KeyPath, target: KeyPath) -> Lines:
        """A copy where every path under ``target`` takes the line of the same path under ``source``.

        An overlay's values land at their place in the document; their lines stay the
        overlay's.
        """
        out = Lines(self._lines)
        n = len(source)
        for path, line in self._lines.items():
            if path[:n] == source:
                out._lines[(*target, *path[n:])] = line
        return out

    def __iter__(self) -> Iterator[tuple[KeyPath, int]]:
        return iter(self._lines.items())


@dataclass
class YamlSource:
    """A parsed document: its value, the line of each key path, and keys given twice."""

    data: Any
    lines: Lines
    duplicates: list[tuple[KeyPath, int]] = field(default_factory=list)


def read_yaml(text: str, file: str) -> YamlSource:
    """Parse ``text`` as one YAML document the way ``yaml.safe_load`` does, with lines.

    Raises:
        ManifestParseError: the text is not YAML (``E_YAML``, with the line of the problem).
        ManifestSchemaError: aliases expand it beyond :data:`MAX_VALUES` values or
            :data:`MAX_DEPTH` levels (``E_MANIFEST_TOO_LARGE``).
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlSource(None, Lines())
        duplicates = _duplicates(loader, node)
        data = loader.construct_document(node)
        lines = _lines(loader, node, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        raise ManifestIssue(
            "error", "E_YAML", (), f"malformed YAML: {problem}; fix the syntax", file, mark.line + 1 if mark else None
        ).error() from None
    except yaml.YAMLError as exc:
        raise ManifestIssue("error", "E_YAML", (), f"malformed YAML: {exc}; fix the syntax", file).error() from None
    except RecursionError:
        raise _too_large(file, (), None, deep=True).error() from None
    finally:
        loader.dispose()
    return YamlSource(data, lines, duplicates)


def _too_large(file: str, path: KeyPath, line: int | None, *, deep: bool = False) -> ManifestIssue:
    size = (
        f"nests deeper than {MAX_DEPTH} levels (an alias inside itself?)"
        if deep
        else f"expands to more than {MAX_VALUES} values (aliases of aliases?)"
    )
    return ManifestIssue(
        "error",
        "E_MANIFEST_TOO_LARGE",
        path,
        f"the manifest {size}; a manifest describes a project, its targets, components and tasks: keep it small",
        file,
        line,
    )


def _duplicates(loader: yaml.SafeLoader, root: yaml.Node) -> list[tuple[KeyPath, int]]:
    """Keys given twice in one mapping (``<<`` merges excluded), with the later key's line.

    Each node is visited once, so aliases cost nothing here; the path is that of the
    node's first use.
    """
    found: list[tuple[KeyPath, int]] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, KeyPath]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[tuple[str, str]] = set()
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                if isinstance(key_node, yaml.ScalarNode):
                    ident = (key_node.tag, key_node.value)
                    if ident in keys:
                        found.append(((*path, str(key_node.value)), key_node.start_mark.line + 1))
                    keys.add(ident)
                    stack.append((value_node, (*path, str(key_node.value))))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
    return sorted(found, key=lambda item: item[1])


def _lines(loader: yaml.SafeLoader, root: yaml.Node, file: str) -> Lines:
    """The line of every key path of the constructed document (merge keys already flattened).

    Raises:
        ManifestSchemaError: more than :data:`MAX_VALUES` paths, or deeper than :data:`MAX_DEPTH`.
    """
    lines = Lines()
    count = 0
    stack: list[tuple[yaml.Node, KeyPath]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise _too_large(file, (), None).error()
        if len(path) > MAX_DEPTH:
            raise _too_large(file, path[:3], lines.of(path[:3]), deep=True).error()
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                child = (*path, key if isinstance(key, str) else str(key))
                lines.set(child, key_node.start_mark.line + 1)
                stack.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = (*path, i)
                lines.set(child, item.start_mark.line + 1)
                stack.append((item, child))
    lines.set((), root.start_mark.line + 1)
    return lines
