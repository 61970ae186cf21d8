"""Opaque cursors for the lists clients page through (jobs, saved lessons, sets, audio).

A cursor names the last item a page showed by its place in the list's order (newest first:
its time, then its id to break ties), so the next page starts right after it whatever was
added meanwhile: no item is shown twice or skipped. Clients treat it as an opaque string.
"""

from __future__ import annotations

import base64
import binascii

import orjson

Position = tuple[float, str]  # (created at, id): the list's order, newest first


class InvalidCursor(ValueError):
    pass


def encode(list_name: str, position: Position) -> str:
    raw = orjson.dumps([list_name, position[0], position[1]])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(list_name: str, cursor: str) -> Position:
    """The position a cursor of ``list_name`` names, or ``InvalidCursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, created, item = orjson.loads(raw)
        if name != list_name or not isinstance(item, str) or isinstance(created, bool):
            raise InvalidCursor(cursor)
        return float(created), item
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursor(cursor) from exc
