"""Reading deployment policies from YAML: the entry points the CLI uses.

    text ──compose (safe, bounded)──▶ nodes ──▶ plain value + field positions
         ──dispatch on apiVersion/kind (or top-level services: a Compose file)──▶
           native documents (translated if needed; one per Compose service)
         ──validate_deployment / validate_policy (schema, reader, semantic checks)──▶
           Deployment or PlacementPolicy, or problems placed at file:line:column

Only the safe loader's node types are built, and hostile input is refused
before it costs memory or stack: files over :data:`MAX_FILE_BYTES`, nesting
deeper than :data:`MAX_DEPTH`, more than :data:`MAX_ALIASES` aliases, or a
document that expands to more than :data:`MAX_NODES` nodes through aliases
("billion laughs"). Mapping keys are taken as written (``on:`` is the string
"on", not True) and a key given twice is an error.

Every problem found in a batch is reported at once: :class:`PolicyError`
carries all of them, warnings included, in file order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from policies import compose, kubernetes
from policies.errors import FieldPath, PolicyError, Problem, Problems
from policies.kubernetes import Translation
from policies.model import (
    API_VERSION,
    Deployment,
    PlacementPolicy,
    _kind,
    validate_deployment,
    validate_policy,
)

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 1000
MAX_NODES = 100_000
SUPPORTED = (f"{API_VERSION} Deployment, {API_VERSION} PlacementPolicy and "
             f"{kubernetes.API_VERSION} {kubernetes.KIND}")

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"
_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{name}"
                         for name in ("null", "bool", "int", "float", "str", "timestamp"))

Position = tuple[int, int]  # 1-based line, column


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadResult:
    deployments: tuple[Deployment, ...] = ()
    warnings: tuple[Problem, ...] = ()
    policies: tuple[PlacementPolicy, ...] = ()


def load_text(text: str, *, filename: str = "<input>") -> LoadResult:
    batch = _Batch()
    batch.add_text(text, filename)
    return batch.result()


def load_file(path: str | Path) -> LoadResult:
    batch = _Batch()
    batch.add_file(Path(path))
    return batch.result()


def load_path(path: str | Path) -> LoadResult:
    """A file, or every ``*.yaml`` / ``*.yml`` directly in a directory (sorted)."""
    path = Path(path)
    batch = _Batch()
    if not path.is_dir():
        batch.add_file(path)
        return batch.result()
    files = sorted(p for p in path.iterdir()
                   if p.suffix in (".yaml", ".yml") and not p.is_dir())
    if not files:
        batch.fail(str(path), "no *.yaml or *.yml files in this directory", None)
    for file in files:
        batch.add_file(file)
    return batch.result()


class _Mark(Protocol):
    """A position in the YAML text, 0-based (pure-Python and libyaml marks alike)."""

    @property
    def line(self) -> int: ...
    @property
    def column(self) -> int: ...


class _Refused(Exception):
    """Stops reading one document: a limit was hit or a node cannot be built."""

    def __init__(self, message: str, mark: _Mark | None) -> None:
        super().__init__(message)
        self.message = message
        self.position = _position(mark)


def _position(mark: _Mark | None) -> Position | None:
    return None if mark is None else (mark.line + 1, mark.column + 1)


@dataclass(slots=True)
class _Batch:
    """Everything loaded so far; names must be unique across the whole batch."""

    deployments: list[Deployment] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    defined_at: dict[str, str] = field(default_factory=dict)
    policies: list[PlacementPolicy] = field(default_factory=list)
    policy_defined_at: dict[str, str] = field(default_factory=dict)

    def result(self) -> LoadResult:
        if any(not p.warning for p in self.problems):
            # An error at a field says all there is to say about it: drop warnings there.
            failed = {(p.file, p.path) for p in self.problems if not p.warning}
            raise PolicyError([p for p in self.problems
                               if not (p.warning and (p.file, p.path) in failed)])
        return LoadResult(deployments=tuple(self.deployments), warnings=tuple(self.problems),
                          policies=tuple(self.policies))

    def fail(self, file: str, message: str, position: Position | None = (1, 1)) -> None:
        line, column = position or (None, None)
        self.problems.append(Problem(message=message, file=file, line=line, column=column))

    def add_file(self, path: Path) -> None:
        file = str(path)
        try:
            with path.open("rb") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            self.fail(file, f"cannot read: {exc.strerror or exc}", None)
            return
        if len(data) > MAX_FILE_BYTES:
            self.fail(file, _too_large())
            return
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - data.rfind(b"\n", 0, exc.start)
            self.fail(file, f"not UTF-8 text (byte 0x{data[exc.start]:02x})", (line, column))
            return
        self.add_text(text, file)

    def add_text(self, text: str, file: str) -> None:
        if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
            self.fail(file, _too_large())
            return
        documents = 0
        try:
            for root in _compose_all(text):
                if isinstance(root, ScalarNode) and root.tag == _NULL_TAG:
                    continue  # an empty document: "---" with nothing after it
                documents += 1
                self.add_document(root, file)
        except _Refused as exc:
            self.fail(file, exc.message, exc.position)
            return
        except yaml.MarkedYAMLError as exc:
            self.fail(file, _syntax_message(exc), _position(exc.problem_mark))
            return
        except ReaderError as exc:
            self.fail(file, f"unacceptable character #x{exc.character:04x}: {exc.reason}",
                      _offset_position(text, exc.position))
            return
        except yaml.YAMLError as exc:  # not raised by the safe loader today; kept total
            self.fail(file, str(exc))
            return
        if documents == 0:
            self.fail(file, "no documents found (expected at least one Deployment)")

    def add_document(self, root: Node, file: str) -> None:
        found = Problems()
        positions: dict[FieldPath, Position] = {}
        try:
            _measure(root, 0, {}, set())
            value = _Builder(found, positions).build(root, ())
        except _Refused as exc:
            self.fail(file, exc.message, exc.position)
            return
        deployments = _validate(value, found)
        placed = []
        for problem in found.items:
            line, column = (problem.line, problem.column) if problem.line is not None \
                else _locate(problem.path, positions)
            placed.append(Problem(message=problem.message, path=problem.path,
                                  warning=problem.warning, file=file, line=line, column=column))
        self.problems.extend(sorted(placed, key=lambda p: (p.line or 0, p.column or 0)))
        if not found.errors:
            for deployment, name_path in deployments:
                if isinstance(deployment, PlacementPolicy):
                    self.add_policy(deployment, file, positions)
                else:
                    self.add_deployment(deployment, file, positions, name_path)

    def add_deployment(self, deployment: Deployment, file: str,
                       positions: dict[FieldPath, Position],
                       name_path: FieldPath = ("metadata", "name")) -> None:
        line, column = _locate(name_path, positions)
        first = self.defined_at.get(deployment.name)
        if first is not None:
            self.problems.append(Problem(
                message=f"deployment {deployment.name!r} is already defined at {first}",
                path=name_path, file=file, line=line, column=column))
            return
        self.defined_at[deployment.name] = f"{file}:{line}"
        self.deployments.append(deployment)

    def add_policy(self, policy: PlacementPolicy, file: str,
                   positions: dict[FieldPath, Position]) -> None:
        line, column = _locate(("metadata", "name"), positions)
        first = self.policy_defined_at.get(policy.name)
        if first is not None:
            self.problems.append(Problem(
                message=f"placement policy {policy.name!r} is already defined at {first}",
                path=("metadata", "name"), file=file, line=line, column=column))
            return
        self.policy_defined_at[policy.name] = f"{file}:{line}"
        self.policies.append(policy)


def _too_large() -> str:
    return f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; refusing to read it"


def _syntax_message(exc: yaml.MarkedYAMLError) -> str:
    message = exc.problem or "invalid YAML"
    if exc.context and exc.context_mark is not None:
        line, column = exc.context_mark.line + 1, exc.context_mark.column + 1
        message += f" ({exc.context} at line {line}, column {column})"
    elif exc.context:
        message += f" ({exc.context})"
    return message


def _offset_position(text: str, offset: int) -> Position:
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


def _locate(path: FieldPath, positions: dict[FieldPath, Position]) -> Position:
    """Where a field is, or (when it is missing) the nearest ancestor that exists."""
    for cut in range(len(path), -1, -1):
        found = positions.get(path[:cut])
        if found is not None:
            return found
    return 1, 1


# -- YAML, bounded ---------------------------------------------------------------


_SEXAGESIMAL = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader's composer, refusing deep nesting and alias floods while
    composing: PyYAML composes recursively, so depth must be stopped here."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        # YAML 1.1 reads 22:22 as the base-60 number 1342; Compose (YAML 1.2) and every
        # operator read a port mapping. Such scalars stay strings.
        if kind is yaml.ScalarNode and implicit[0] and _SEXAGESIMAL.match(value):
            return "tag:yaml.org,2002:str"
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        # The scanner reads ahead over a whole run of "[[[[..." before the composer
        # sees any of it: flow nesting is refused here, as it is scanned.
        if self.flow_level >= MAX_DEPTH:
            raise _Refused(_too_deep(), self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} aliases; refusing to expand them",
                               event.start_mark)
            return super().compose_node(parent, index)
        if not isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(_too_deep(), event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose_all(text: str) -> Iterator[Node]:
    loader = _BoundedLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                yield node
    finally:
        loader.dispose()


def _too_deep() -> str:
    return f"nested deeper than {MAX_DEPTH} levels; refusing to read it"


def _children(node: Node) -> Iterator[Node]:
    if isinstance(node, SequenceNode):
        yield from node.value
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield key
            yield value


def _measure(node: Node, depth: int, memo: dict[int, tuple[int, int]],
             open_nodes: set[int]) -> int:
    """The node count of ``node`` with every alias expanded, computed once per
    distinct node, so a billion-laughs document is refused after a few hundred
    steps instead of being expanded. Also refuses recursive aliases and nesting
    that aliases make deeper than :data:`MAX_DEPTH`."""
    key = id(node)
    if key not in memo:
        if key in open_nodes:
            raise _Refused("an alias refers to a node that contains it; refusing to expand it",
                           node.start_mark)
        size, height = 1, 0
        if not isinstance(node, ScalarNode):
            if depth >= MAX_DEPTH:
                raise _Refused(_too_deep(), node.start_mark)
            open_nodes.add(key)
            for child in _children(node):
                size += _measure(child, depth + 1, memo, open_nodes)
                height = max(height, memo[id(child)][1] + 1)
                if size > MAX_NODES:
                    raise _Refused(f"expands to more than {MAX_NODES} nodes through aliases; "
                                   "refusing to expand it", node.start_mark)
            open_nodes.discard(key)
        memo[key] = (size, height)
    size, height = memo[key]
    if depth + height > MAX_DEPTH:
        raise _Refused(_too_deep(), node.start_mark)
    return size


class _Builder:
    """Plain values from nodes, recording where each field path was written:
    the key's position for a mapping entry, the item's for a list item."""

    def __init__(self, problems: Problems, positions: dict[FieldPath, Position]) -> None:
        self.problems = problems
        self.positions = positions
        self.scalars = SafeConstructor()

    def build(self, node: Node, path: FieldPath) -> Any:
        if not path:
            self.positions[()] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if isinstance(node, SequenceNode):
            self.expect_tag(node, _SEQ_TAG, "a list")
            items = []
            for i, item in enumerate(node.value):
                self.place((*path, i), item)
                items.append(self.build(item, (*path, i)))
            return items
        if isinstance(node, MappingNode):
            return self.mapping(node, path)
        raise _Refused(f"unsupported YAML node {type(node).__name__}", node.start_mark)

    def place(self, path: FieldPath, node: Node) -> None:
        self.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))

    def expect_tag(self, node: Node, tag: str, what: str) -> None:
        if node.tag != tag:
            raise _Refused(f"unsupported tag {_short_tag(node.tag)!r} (expected {what})",
                           node.start_mark)

    def scalar(self, node: ScalarNode) -> Any:
        if node.tag in (_MERGE_TAG, _VALUE_TAG):
            return node.value  # a plain "<<" or "=" where a value is expected: text
        if node.tag not in _SCALAR_TAGS:
            raise _Refused(f"unsupported tag {_short_tag(node.tag)!r} (expected a plain value)",
                           node.start_mark)
        try:
            return self.scalars.construct_object(node)
        except yaml.MarkedYAMLError as exc:
            raise _Refused(exc.problem or "cannot read this value", node.start_mark) from exc
        # The safe constructor lets ValueError, KeyError and friends escape on
        # values such as ``!!int abc`` or ``!!timestamp 2024-13-45``.
        except Exception as exc:
            raise _Refused(f"cannot read {_shown(node.value, quote=True)} as "
                           f"{_short_tag(node.tag)}", node.start_mark) from exc

    def mapping(self, node: MappingNode, path: FieldPath) -> dict[str, Any]:
        self.expect_tag(node, _MAP_TAG, "a mapping")
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = self.key(key_node)
            if key in first_line:
                line, column = _position(key_node.start_mark) or (None, None)
                self.problems.items.append(Problem(
                    message=f"duplicate key {key!r} (first given at line {first_line[key]})",
                    path=(*path, key), line=line, column=column))
                continue
            first_line[key] = key_node.start_mark.line + 1
            self.place((*path, key), key_node)
            out[key] = self.build(value_node, (*path, key))
        # Keys written in the mapping win over merged ones; earlier merges win
        # over later ones, as the YAML merge key specification says.
        for merge in merges:
            for source in self.merge_sources(merge):
                for key, value in self.mapping(source, path).items():
                    out.setdefault(key, value)
        return out

    def merge_sources(self, node: Node) -> list[MappingNode]:
        if isinstance(node, MappingNode):
            return [node]
        if isinstance(node, SequenceNode) and all(isinstance(n, MappingNode) for n in node.value):
            return list(node.value)
        raise _Refused("a merge key '<<' needs a mapping or a list of mappings",
                       node.start_mark)

    def key(self, node: Node) -> str:
        if not isinstance(node, ScalarNode):
            raise _Refused("mapping keys must be plain scalars, not a list or mapping",
                           node.start_mark)
        return str(node.value)


# -- dispatch --------------------------------------------------------------------


def _validate(value: Any, found: Problems
              ) -> list[tuple[Deployment | PlacementPolicy, FieldPath]]:
    """Each deployment the document defines, with the path of its name as
    written: a Compose file defines one per service, any other document one.
    A placement policy exists only in the native format: it is validated as is."""
    if isinstance(value, dict) and value.get("kind") == "PlacementPolicy":
        policy, problems = validate_policy(value)
        found.items.extend(problems)
        return [] if policy is None else [(policy, ("metadata", "name"))]
    if compose.is_compose(value):
        translations = compose.translate(value, found)
    else:
        translation = _translation(value, found)
        translations = [] if translation is None else [translation]
    out: list[tuple[Deployment | PlacementPolicy, FieldPath]] = []
    for translation in translations:
        deployment = _validate_translation(translation, found)
        if deployment is not None:
            out.append((deployment, translation.source_path(("metadata", "name"))))
    return out


def _validate_translation(translation: Translation, found: Problems) -> Deployment | None:
    """Validate through the one native path; native problems are put back in
    the coordinates of the document as written."""
    deployment, problems = validate_deployment(translation.document)
    for problem in problems:
        path = translation.source_path(problem.path)
        if problem.path not in translation.settled and not any(
                path[:len(done)] == done for done in translation.unread):
            found.items.append(Problem(message=problem.message, path=path,
                                       warning=problem.warning))
    return deployment


def _translation(value: Any, found: Problems) -> Translation | None:
    if not isinstance(value, dict):
        found.error((), f"expected a mapping (a Deployment), found {_kind(value)}")
        return None
    api, kind = value.get("apiVersion"), value.get("kind")
    if kind is None:
        found.error(("kind",), f"is required (supported are {SUPPORTED})")
        return None
    if kind != "Deployment":
        where = f"apiVersion {_shown(api)}" if api is not None else "no apiVersion"
        found.error(("kind",), f"unknown kind {_shown(kind, quote=True)} ({where}): "
                    f"supported are {SUPPORTED}")
        return None
    if api == API_VERSION:
        return Translation(document=value)
    if api == kubernetes.API_VERSION:
        return kubernetes.translate(value, found)
    if api is None:
        found.error(("apiVersion",), f"is required (supported are {SUPPORTED})")
    else:
        found.error(("apiVersion",), f"unknown apiVersion {_shown(api, quote=True)} for kind "
                    f"'Deployment': supported are {SUPPORTED}")
    return None


def _short_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _shown(value: Any, *, quote: bool = False) -> str:
    """A user's value in a message, short and unambiguous."""
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return repr(text) if quote else text
    if isinstance(value, dict | list):
        return f"({_kind(value)})"
    return repr(value) if quote else str(value)

