"""The stream manager: Greengrass-compatible local streams on the core (see README.md)."""
