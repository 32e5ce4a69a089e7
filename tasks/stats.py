"""Confidence intervals for accuracies (IIA, task accuracy): re-exported from
`iit.search.stats` (one implementation, usable by the library and the tasks)."""

from __future__ import annotations

from iit.search.stats import wilson_interval

__all__ = ["wilson_interval"]
