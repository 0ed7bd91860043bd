"""The REST API (Starlette), one module per resource.

All routes under ``/api/v1`` need ``Authorization: Bearer <token>``; errors are JSON
``{"error": {"status", "message", "field"?}}``. Each resource module (``groups``,
``cores``, ``things`` with certificates, ``functions`` with artifacts, ``subscriptions``,
``deployments`` with the fleet, ``messages``, ``system``) declares its request models
(frozen dataclasses, parsed once by ``parsing``), its module-level handlers and its
``OPERATIONS``; ``app`` joins them, checks tokens and turns errors into JSON;
``openapi`` generates ``/api/openapi.json`` from the same operations and models.
"""

from hedgerow.cloud.api.app import OPENAPI, OPERATIONS, console_routes, create_app, error_json
from hedgerow.cloud.api.edge import ApiContext, Operation

__all__ = [
    "OPENAPI",
    "OPERATIONS",
    "ApiContext",
    "Operation",
    "console_routes",
    "create_app",
    "error_json",
]
