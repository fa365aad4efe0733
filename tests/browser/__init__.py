"""Tests that drive a real browser against a live server."""

from __future__ import annotations
