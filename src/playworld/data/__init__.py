"""Data: recorders (Atari, tabletop), video ingest, the on-disk dataset format, clip datasets."""
