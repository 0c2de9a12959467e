"""Hypothesis strategies for the JSON schemas pydantic writes for our message models.

Covers the part of JSON Schema those schemas use (const, enum, anyOf, strings with
patterns and lengths, bounded integers and numbers, arrays with items or prefixItems,
objects with properties or additionalProperties).
"""

from __future__ import annotations

import math

from hypothesis import strategies as st

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6)


def from_schema(schema: dict) -> st.SearchStrategy:
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of(*(from_schema(s) for s in schema["anyOf"]))
    kind = schema.get("type")
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        high = schema["exclusiveMaximum"] - 1 if "exclusiveMaximum" in schema else schema.get("maximum")
        return st.integers(min_value=schema.get("minimum"), max_value=high)
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        return st.floats(min_value=low, max_value=schema.get("maximum"), exclude_min="exclusiveMinimum" in schema,
                         allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        if "prefixItems" in schema:
            return st.tuples(*(from_schema(s) for s in schema["prefixItems"])).map(list)
        return st.lists(from_schema(schema.get("items", {})), max_size=4)
    if kind == "object":
        return _object(schema)
    return JSON


def _string(schema: dict) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength", math.inf)
    if "pattern" not in schema:
        return st.text(min_size=low, max_size=min(high, 20))
    return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: low <= len(s) <= high)


def _object(schema: dict) -> st.SearchStrategy[dict]:
    if "properties" not in schema:
        extra = schema.get("additionalProperties", True)
        values = from_schema(extra) if isinstance(extra, dict) else JSON
        return st.dictionaries(st.text(max_size=5), values, max_size=3)
    required = set(schema.get("required", ()))
    props = schema["properties"]
    return st.fixed_dictionaries({k: from_schema(v) for k, v in props.items() if k in required},
                                 optional={k: from_schema(v) for k, v in props.items() if k not in required})
