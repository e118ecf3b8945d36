"""The driver's side of a run's lease (store/lease.py) and of its stop signals.

- ``Heartbeat`` renews the lease on a daemon thread while the loop runs. Should the lease be found taken
  over (this driver stalled past its expiry and another process forced the run), it interrupts the main
  thread like a SIGTERM, so this driver stops writing rather than becoming a second writer.
- ``stop_signals`` turns SIGTERM (`dibs jobs stop`, a scheduler's timeout, `kill`) and SIGINT into one
  ``Stopped`` exception, a KeyboardInterrupt, so both end the run the way Ctrl-C always did: marked
  'stopped', lease released, last checkpoint kept, and `dibs resume` continues it.
"""

from __future__ import annotations

import _thread
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from dibs.platform.store import ResultsStore, StoreError
from dibs.platform.store.lease import HEARTBEAT_SECONDS, LEASE_SECONDS

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """The driver got ``signum``; its exit code is the shell's 128 + signum (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """SIGINT and SIGTERM raise ``Stopped`` in the main thread, once: a second signal while the run is
    being closed is ignored, or it would cut the closing short and leave the row 'running'. Yields the
    signals received: ``ray.get`` turns any exception of a handler into a bare KeyboardInterrupt."""
    fired: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if not fired:
            fired.append(signum)
            raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield fired
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Heartbeat:
    """Renews ``owner``'s lease on ``run_id`` every ``every`` seconds for ``seconds`` while in the block.

    A store that does not answer for a while is retried at the next beat (the lease may lapse meanwhile;
    only another process's takeover ends the run). ``lost`` tells that the lease was taken over."""

    def __init__(self, store: ResultsStore, run_id: str, owner: str, *, every: float = HEARTBEAT_SECONDS,
                 seconds: float = LEASE_SECONDS) -> None:  # fmt: skip
        self.store, self.run_id, self.owner = store, run_id, owner
        self.every, self.seconds = every, seconds
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{run_id}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                held = self.store.renew_lease(self.run_id, self.owner, self.seconds)
            except StoreError:
                continue
            if not held and not self._stop.is_set():
                self.lost = True
                _thread.interrupt_main(signal.SIGTERM)  # the handler of stop_signals: stop writing
                return
