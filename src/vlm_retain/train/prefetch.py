"""Collate the next batches in a background thread while the accelerator runs this one.

Why: ``vlm-retain train`` collates each micro-batch between steps (images decoded, resized and
cut into patches, the chat tokenised): at micro-batch 64 that is a fraction of a second of one
CPU core per step, which a GPU step of about as long then waits for. Most of that work (PIL,
the Rust tokenizer, torch) releases the GIL, so one thread filling a short queue overlaps it
with the step. The batches and their order are exactly those of the plain loop; an error in
collation is raised when its batch is reached, as without the thread. On a CPU the cores are
already busy with the step, so ``train.prefetch: auto`` uses it with CUDA only.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_END = object()


class Prefetched(Generic[T]):
    """``source``'s items in order, produced up to ``depth`` ahead by a daemon thread."""

    def __init__(self, source: Iterator[T], depth: int = 2) -> None:
        self._source = source
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._fill, name="prefetch", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            for item in self._source:
                if not self._put((True, item)):
                    return
            self._put((False, _END))
        except BaseException as exc:  # handed to the consumer, raised at its batch
            self._put((False, exc))

    def _put(self, entry: tuple[bool, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetched[T]:
        return self

    def __next__(self) -> T:
        if self._ended:
            raise StopIteration
        ok, item = self._queue.get()
        if ok:
            return item
        self._ended = True  # the thread has stopped: nothing more will come
        if item is _END:
            raise StopIteration
        raise item

    def close(self) -> None:
        """Stop the thread (it finishes the item in hand) and drop what it made."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.1)
        self._thread.join()


def own_processor(loaded: Any) -> Any:
    """``loaded`` with a copy of its processor: a fast tokenizer keeps mutable padding state
    and must not be used from two threads at once (the probe and checkpoints use the
    original while the prefetch thread collates)."""
    import copy
    import dataclasses

    processor = copy.deepcopy(loaded.processor)
    return dataclasses.replace(loaded, processor=processor, tokenizer=processor.tokenizer)


def wants_prefetch(setting: str, device: Any) -> bool:
    """``train.prefetch`` resolved: ``auto`` is on with CUDA."""
    if setting == "auto":
        return getattr(device, "type", device) == "cuda"
    return setting == "on"
