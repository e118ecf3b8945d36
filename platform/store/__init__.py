"""The dibs results store: runs, metric rows and checkpoints behind a SQLAlchemy URL.

``open_store(url)`` opens (and upgrades) a store; ``ResultsStore`` is its API and ``MetricRow`` one
metric at one step with the budget spent so far.
"""

from .store import MetricRow, ResultsStore, StoreError, open_store

__all__ = ["MetricRow", "ResultsStore", "StoreError", "open_store"]
