"""Conformance tests for the parent watch: a job killed with SIGKILL leaves nothing behind."""

from __future__ import annotations


class ParentDeathTests:
    """Parent-death tests, run for every backend and every watch variant this machine has."""
