"""Clean-room ``greengrass_common`` for the PyPI ``greengrasssdk`` (Hedgerow's V1 runtime)."""
