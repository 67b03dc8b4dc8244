"""Request bodies refuse control characters in every text field (issue 8 item 4).

A NUL or other control character in an address is never meant, breaks storage (PostgreSQL
refuses NUL in text) and output (logs, receipts, CSV exports). Every API input model derives from
`InputModel`: each string it holds, at any depth, is checked, and a refusal is a 422 that names
the field, never echoing the value. Fields listed in `MULTILINE` may hold line breaks and tabs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_SINGLE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The same, less tab, line feed and carriage return.
_MULTI_LINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
# For query parameters (FastAPI `Query(pattern=...)`): no control character at all.
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"


def has_control_characters(text: str, *, multiline: bool = False) -> bool:
    return (_MULTI_LINE if multiline else _SINGLE_LINE).search(text) is not None


def _check(value: Any, multiline: bool) -> None:
    if isinstance(value, str):
        if has_control_characters(value, multiline=multiline):
            raise PydanticCustomError(
                "control_characters",
                "Text must not contain control characters"
                + ("." if multiline else " or line breaks."),
            )
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _check(item, multiline)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check(key, False)
            _check(item, multiline)


class InputModel(BaseModel):
    """Base of every request body: unknown fields refused, no control characters in text."""

    model_config = ConfigDict(extra="forbid")
    MULTILINE: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        _check(value, info.field_name in cls.MULTILINE)
        return value
