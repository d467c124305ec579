"""Shared neural building blocks: written once, used by every playworld model."""
