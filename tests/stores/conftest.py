"""Fixtures of the store tests."""

from __future__ import annotations

from tests.stores.contract import captured

__all__ = ["captured"]
