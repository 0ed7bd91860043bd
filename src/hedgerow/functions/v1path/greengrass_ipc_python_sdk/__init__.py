"""Clean-room ``greengrass_ipc_python_sdk`` for the PyPI ``greengrasssdk`` (Hedgerow's V1 runtime)."""
