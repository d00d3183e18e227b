"""The single-file HTML report of a run."""

from .html import build_report

__all__ = ["build_report"]
