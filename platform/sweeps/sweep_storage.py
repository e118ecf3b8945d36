"""The Optuna storage of a sweep: the results database, with its password kept out of Tune's files.

Tune pickles the search algorithm, and with it Optuna's ``RDBStorage`` and its URL, into
``<output_dir>/sweeps/<id>/`` (tuner.pkl, searcher-state-*.pkl). ``SweepStorage`` pickles the masked URL
instead; unpickling it (``Tuner.restore`` and the searcher's restore inside ``Tuner.fit``, where no
argument of ours reaches) takes the real URL from ``store_url_for_restore``, set by the sweep driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import optuna

from dibs.platform.store.sql import StoreError, display_url

# A context variable rather than an argument: Tune unpickles the storage deep inside its own calls.
_RESTORE_URL: ContextVar[str | None] = ContextVar("dibs_sweep_store_url", default=None)


@contextmanager
def store_url_for_restore(url: str) -> Iterator[None]:
    """While inside, an unpickled ``SweepStorage`` whose masked URL matches ``url`` connects with ``url``."""
    token = _RESTORE_URL.set(url)
    try:
        yield
    finally:
        _RESTORE_URL.reset(token)


class SweepStorage(optuna.storages.RDBStorage):
    """``RDBStorage`` whose pickled state holds the URL with its password masked."""

    def __getstate__(self) -> dict[Any, Any]:
        return super().__getstate__() | {"url": display_url(self.url)}

    def __setstate__(self, state: dict[Any, Any]) -> None:
        url = _RESTORE_URL.get()
        if url is None or display_url(url) != state["url"]:
            raise StoreError(
                f"sweep storage {state['url']}: restored without its store URL "
                "(dibs sweep --resume takes it from --db or $DIBS_DB_URL)"
            )
        super().__setstate__(state | {"url": url})
