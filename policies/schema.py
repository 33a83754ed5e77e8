"""Structure of native documents, checked against ``policies/deployment.schema.json``.

The schema is published with the package (editors and CI can use it) and is
the first half of the one validation path (:mod:`policies.model`): it judges
structure -- types, required and unknown fields, enums, ranges, the shape of
names, quantities and durations -- and each of its errors becomes a
:class:`Problem` at the field's path, worded "found X, expected Y" as the
rest of the model's messages are.

What the schema cannot say well is left to the reader that builds the model:
parsing quantities and durations into numbers (``1e400``, ``1.5ms``),
selector operators and their values, and the semantic checks
(:mod:`policies.checks`). The reader runs over the same document in the same
pass so every problem is reported at once; where both judge the same field (or the
schema refused a field the reader looked inside) the schema's problem is kept
and the reader's dropped (:func:`merge`), so no problem is reported twice.

A field given as ``null`` counts as not given, as ``kubectl`` treats it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

from policies.errors import FieldPath, Problem, kind_of

SCHEMA_FILE = "deployment.schema.json"

# How a $def is named in "expected ..." and, for patterns, the whole message.
_WORDS = {
    "text": "a string", "image": "a string", "name": "a name", "port": "a port number",
    "protocol": "tcp or udp", "cpu": "a cpu quantity like 250m or 0.5",
    "memory": "a memory quantity like 64Mi or 1Gi",
    "duration": "a duration like 500ms, 10s, 5m or 1h", "absolutePath": "an absolute path",
    "deviceKind": "a device kind like nvidia.com/gpu",
    "capability": "a capability like NET_ADMIN or ALL", "country": "a country code like de",
    "stringList": "a list of strings", "stringMap": "a mapping",
}
_PATTERN_MESSAGES = {
    "name": "{value!r} is not a valid name (expected lowercase letters, digits and '-', "
            "at most 63 characters)",
    "protocol": "found {lower!r}, expected tcp or udp",
    "cpu": "{value!r} is not a cpu quantity (expected like 250m or 0.5)",
    "memory": "{value!r} is not a memory quantity (expected like 64Mi or 1Gi)",
    "duration": "{value!r} is not a duration (expected like 500ms, 10s, 5m or 1h)",
    "absolutePath": "{value!r} is not an absolute path (expected a path starting with /)",
    "deviceKind": "{value!r} is not a device kind (expected a name like nvidia.com/gpu)",
    "capability": "{value!r} is not a capability (expected upper case like NET_ADMIN or ALL)",
    "country": "{value!r} is not a country code (expected two lowercase letters like de)",
}
_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a string",
               "integer": "an integer", "number": "a number", "boolean": "true or false",
               "null": "nothing"}
_RANGE = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_DEEPEST = 16  # the deepest field: spec.placement.split[0].sites.matchExpressions[0].values[0]


@functools.cache
def schema() -> dict[str, Any]:
    """The published schema, as JSON gives it."""
    text = resources.files("policies").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@functools.cache
def _validator(kind: str) -> Any:
    import jsonschema  # here, not at import: only the controller and CLI validate

    # YAML tells 2 from 2.0; JSON Schema would take 2.0 as an integer.
    integers = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
    validator_class = jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                                   type_checker=integers)
    return validator_class(_inlined()[kind])


@functools.cache
def _inlined() -> dict[str, dict[str, Any]]:
    """Each $def with every "$ref" replaced by the (one, shared) inlined $def it
    names: resolving references while validating costs a third of the time. The
    annotations beside a "$ref" ("default", "description") do not validate
    anything and are left out."""
    defs = schema()["$defs"]
    done: dict[str, dict[str, Any]] = {}

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            name = str(node["$ref"]).rsplit("/", 1)[-1]
            if name not in done:
                done[name] = {}  # the schema has no cycles; this only keeps identity
                done[name].update(inline(defs[name]))
            return done[name]
        return {key: inline(value) for key, value in node.items()}

    for name in defs:
        inline({"$ref": f"#/$defs/{name}"})
    return done


def schema_problems(doc: Any, kind: str) -> list[Problem]:
    """Every structural problem of ``doc`` as a document of ``kind``, one per field."""
    found: dict[FieldPath, Problem] = {}
    for error in _validator(kind).iter_errors(without_nulls(doc)):
        for problem in _problems(error):
            found.setdefault(problem.path, problem)
    return list(found.values())


def merge(schema_found: list[Problem], reader_found: Iterable[Problem]) -> list[Problem]:
    """The schema's problems plus the reader's on fields the schema did not judge:
    a reader problem on or inside a field the schema reported repeats it."""
    judged = [p.path for p in schema_found]
    kept = [p for p in reader_found
            if not any(p.path[:len(path)] == path for path in judged)]
    return [*schema_found, *kept]


def without_nulls(value: Any, depth: int = 0) -> Any:
    # Deeper than any field of the format, a value is refused for its type
    # higher up and only its kind is named: an empty one of the same kind keeps
    # JSON from the API (unbounded, unlike the loader's YAML) from recursing.
    if depth > _DEEPEST:
        return type(value)() if isinstance(value, dict | list) else value
    if isinstance(value, dict):
        return {k: without_nulls(v, depth + 1) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v, depth + 1) for v in value]
    return value


# -- error -> problem ------------------------------------------------------------


def _problems(error: Any) -> list[Problem]:
    path: FieldPath = tuple(error.absolute_path)
    keyword, value, node = error.validator, error.instance, error.schema
    if "propertyNames" in error.relative_schema_path and isinstance(value, str):
        path = (*path, value)  # a key refused: point at the key, not its mapping
    if keyword == "required" and isinstance(value, Mapping):
        properties = node.get("properties", {})
        return [Problem(path=(*path, key), message=f"is required (expected "
                        f"{_words(properties.get(key, {}))})")
                for key in error.validator_value if key not in value]
    if keyword == "additionalProperties" and isinstance(value, Mapping):
        known = sorted(node.get("properties", {}))
        return [Problem(path=(*path, str(key)),
                        message=f"unknown field (expected one of: {', '.join(known)})")
                for key in value if key not in known]
    return [Problem(path=path, message=_message(keyword, value, node, error.validator_value))]


def _message(keyword: str, value: Any, node: Mapping[str, Any], expected: Any) -> str:
    if keyword == "type":
        # "expected a mapping, found a string": the value says nothing more there.
        found = kind_of(value) if node.get("type") == "object" else _found(value)
        return f"expected {_words(node)}, found {found}"
    if keyword == "const":
        return f"found {_shown(value)}, expected {expected!r}"
    if keyword == "enum":
        return f"found {_shown(value)}, expected one of {', '.join(map(str, expected))}"
    if keyword in _RANGE:
        return f"{_shown(value)} is out of range (expected {_bounds(node)})"
    if keyword == "pattern":
        template = _PATTERN_MESSAGES.get(_def_name(node) or "")
        if template is not None:
            return template.format(value=value, lower=str(value).lower())
        return f"found {_shown(value)}, expected text matching {expected}"
    if keyword in ("minLength", "minItems"):
        what = "an image reference" if _def_name(node) == "image" else _words(node)
        return f"must not be empty (expected {what})"
    if keyword == "oneOf":
        choices = [k for branch in expected for k in branch.get("required", ())]
        given = [k for k in choices if isinstance(value, Mapping) and k in value]
        found = " and ".join(given) if given else "none of them"
        return f"found {found}, expected exactly one of {', '.join(choices)}"
    return f"found {_shown(value)}, which the schema refuses ({keyword})"  # kept total


def _bounds(node: Mapping[str, Any]) -> str:
    low = (f"at least {node['minimum']}" if "minimum" in node else
           f"more than {node['exclusiveMinimum']}" if "exclusiveMinimum" in node else None)
    high = (f"at most {node['maximum']}" if "maximum" in node else
            f"less than {node['exclusiveMaximum']}" if "exclusiveMaximum" in node else None)
    if "minimum" in node and "maximum" in node:
        return f"{node['minimum']} to {node['maximum']}"
    return " and ".join(part for part in (low, high) if part)


def _def_name(node: Mapping[str, Any]) -> str | None:
    return _def_names().get(id(node))


@functools.cache
def _def_names() -> dict[int, str]:
    # Every use of a $def is this very object, so identity names it.
    return {id(body): name for name, body in _inlined().items()}


def _words(node: Mapping[str, Any]) -> str:
    """How a schema node is named after "expected"."""
    name = _def_name(node)
    if name in _WORDS:
        return _WORDS[name]
    if "const" in node:
        return repr(node["const"])
    if "enum" in node:
        return "one of " + ", ".join(map(str, node["enum"]))
    kinds = node.get("type", "object")
    if kinds == "array":
        return "a list of strings" if _words(node.get("items", {})) == "a string" else "a list"
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return " or ".join(_TYPE_WORDS.get(str(k), str(k)) for k in kinds)


def _found(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return kind_of(value)
    return f"{kind_of(value)} {_shown(value)}"


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str | bool | int | float) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
