"""Hedgerow: a self-hosted IoT edge platform (cloud control plane, edge core, device SDK)."""

__version__ = "0.1.0"
