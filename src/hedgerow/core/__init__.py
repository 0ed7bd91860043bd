"""The core: Hedgerow's edge daemon on a gateway (see ``README.md`` in this directory).

``hedgerow.core.daemon.CoreDaemon`` is the composition root; ``hedgerow.core.config``
loads its configuration. Nothing is imported here, so that small tools (the CLI's
``check``, the tests) load only what they use.
"""
