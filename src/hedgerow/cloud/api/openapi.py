"""The OpenAPI 3.1 document, generated from the operations and their request models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hedgerow import __version__
from hedgerow.cloud.api.edge import Operation
from hedgerow.cloud.api.parsing import json_schema

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "status": {"type": "integer"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the offending field's path"},
            },
            "required": ["status", "message"],
        }
    },
    "required": ["error"],
}


def openapi_document(ops: Sequence[Operation]) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        error = {
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        }
        if op.response is not None:
            content: dict[str, Any] = {"schema": json_schema(op.response, schemas)}
        elif op.produces == "application/json":
            content = {"schema": {"type": "object"}}
        else:
            content = {}
        responses: dict[str, Any] = {
            str(op.status): {
                "description": "Created" if op.status == 201 else "OK",
                "content": {op.produces: content},
            },
            "4XX": {"description": "The request cannot be served", **error},
        }
        if op.body is not None:
            responses["400"] = {"description": "A value the cloud refuses", **error}
            responses["422"] = {"description": "A field of the wrong type, or missing", **error}
        entry: dict[str, Any] = {
            "summary": op.summary,
            "operationId": op.handler.__name__,
            "responses": responses,
        }
        if op.body is not None and op.body.__doc__:
            entry["description"] = " ".join(op.body.__doc__.split())
        if not op.public:
            entry["security"] = [{"bearer": []}]
        parameters = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in (seg[1:-1] for seg in op.path.split("/") if seg.startswith("{"))
        ]
        parameters += [
            {
                "name": q.name,
                "in": "query",
                "required": False,
                "schema": {"type": q.type},
                **({"description": q.description} if q.description else {}),
            }
            for q in op.query
        ]
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": json_schema(op.body, schemas)}},
            }
        elif op.raw_body:
            entry["requestBody"] = {
                "required": True,
                "content": {op.raw_body: {"schema": {"type": "string", "format": "binary"}}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "Hedgerow cloud API", "version": __version__},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "paths": paths,
    }
