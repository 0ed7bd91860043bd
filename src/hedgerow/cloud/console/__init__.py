"""The web console: a single-page app served by the cloud under ``/console/``.

``routes()`` is the hook the REST API looks for: it returns the Starlette routes of the
console (``/`` and ``/console`` redirect to ``/console/``; the assets live in
``static/`` inside the package, so users need no front-end toolchain).
"""

from __future__ import annotations

from hedgerow.cloud.console.routes import ASSETS, routes

__all__ = ["ASSETS", "routes"]
