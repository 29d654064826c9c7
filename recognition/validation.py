"""Checks on untrusted JSON and text before it reaches the database.

PostgreSQL refuses NUL characters in text and ``jsonb`` (a ``DataError``, a 500 if nobody checks
first), and a JSON document nested thousands deep makes Python's parser and encoder raise
``RecursionError``. Both are refused here with a ``ServiceError`` (400) that names the field.
"""
from __future__ import annotations

from typing import Any

from recognition.errors import ServiceError

MAX_JSON_DEPTH = 32


def text_check(value: str, *, field: str) -> str:
    """``value``, or ``ServiceError('nul_character')`` when it holds a NUL character."""
    if "\x00" in value:
        raise ServiceError("nul_character", f"'{field}' contains a NUL character (\\u0000); remove it.")
    return value


def json_check(value: Any, *, field: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``value`` when it nests at most ``max_depth`` deep and no key or string holds a NUL character.

    Walks iteratively, so a hostile depth cannot exhaust the stack here either."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            text_check(item, field=field)
        elif isinstance(item, (dict, list)):
            if depth > max_depth:
                raise ServiceError("too_deep", f"'{field}' nests deeper than {max_depth} levels.")
            if isinstance(item, dict):
                for key, child in item.items():
                    text_check(str(key), field=field)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
    return value

