"""Orchestration of the nightly run: the runner and the `recsys batch` commands. The stages
themselves are in batch/stages/ (one module each, listed once in its registry)."""
