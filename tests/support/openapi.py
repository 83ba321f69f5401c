"""The operations of an API document, as schemathesis reads them."""

from __future__ import annotations

from typing import Any

from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation, BaseSchema


def operations_of(schema: BaseSchema) -> list[APIOperation[Any, Any, Any, Any]]:
    """Every operation of `schema`; one it could not read raises what was wrong with it."""
    operations = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            raise result.err()
        operations.append(result.ok())
    return operations
