"""JSON request bodies with a depth and a size limit: hostile nesting is a 400, never a 500.

Python's json module recurses once per nesting level, so a body of a few thousand `[` ends in
a RecursionError (a 500, which the lb counts against the replica). `loads_limited` measures the
nesting of the raw text first, in one linear pass that cannot recurse, and refuses anything
deeper than JSON_MAX_DEPTH before json sees it. Every JSON body the backend reads goes
through it: `JSONParser` is DRF's default parser, and code that parses JSON by hand calls
`loads_limited` itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import exceptions, parsers, status

DEFAULT_MAX_DEPTH = 32

# Only brackets and quotes matter for nesting: everything else is deleted at C speed first
_KEEP = b'[]{}"'
_DELETE = bytes(b for b in range(256) if b not in _KEEP)
_STRING = re.compile(rb'"[^"]*"')
_OPEN = frozenset(b"[{")


class BodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "body_too_large"


def nesting_depth(text: str | bytes, limit: int) -> int:
    """The deepest nesting of arrays/objects in `text`, counting stops once past `limit`.

    Brackets inside strings do not count. Escaped backslashes and quotes are dropped, then
    everything but brackets and quotes (C-speed bytes operations), then the strings; the loop
    that remains walks brackets only, stops as soon as the limit is passed and never recurses.
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    reduced = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _DELETE)
    depth = deepest = 0
    for byte in _STRING.sub(b"", reduced):
        if byte in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif byte != 0x22:  # a closing bracket (a stray quote: malformed, json will say)
            depth -= 1
    return deepest


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_limited(text: str | bytes, *, max_depth: int | None = None) -> Any:
    """json.loads with a nesting limit; any bad input raises DRF's ParseError (a 400)."""
    limit = max_depth if max_depth is not None else max_json_depth()
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise exceptions.ParseError(f"JSON parse error - not UTF-8: {exc.reason}.") from None
    # cheap exit for ordinary bodies: fewer brackets than the limit cannot nest deeper
    if text.count("[") + text.count("{") > limit and nesting_depth(text, limit) > limit:
        raise exceptions.ParseError(f"JSON parse error - nested deeper than {limit} levels.")
    try:
        return json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and integers longer than Python's digit limit
        raise exceptions.ParseError(f"JSON parse error - {exc}") from None


def max_json_depth() -> int:
    return int(getattr(settings, "JSON_MAX_DEPTH", DEFAULT_MAX_DEPTH))


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser with the nesting limit and a size limit (DATA_UPLOAD_MAX_MEMORY_SIZE).

    BodyLimitMiddleware refuses declared oversized bodies before they are read; this bound
    also holds for a body whose length was not declared up front.
    """

    def parse(
        self,
        stream: IO[bytes] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        if stream is None:
            return {}
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        limit = int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise BodyTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise exceptions.ParseError(f"JSON parse error - not {encoding}: {exc}.") from None
        return loads_limited(text)
