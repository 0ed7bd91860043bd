"""Greengrass V1 compatibility: ARNs, the V1 environment, and the localhost HTTP IPC server
that the PyPI ``greengrasssdk`` (through the clean-room modules in ``../v1path``) talks to."""

from __future__ import annotations

from pathlib import Path

V1_PATH = Path(__file__).resolve().parent.parent / "v1path"
