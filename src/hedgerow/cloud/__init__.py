"""Hedgerow's cloud: registry, PKI, discovery, deployments, telemetry and the REST API.

See ``README.md`` in this directory for the layout; ``server.CloudServer`` is the
composition root, ``datadir.init_data_dir`` creates a data directory.
"""
