"""Server-side batching: concurrent requests' images go through the model together.

One task takes requests off a queue. A request alone is run at once; while the model
runs (in a worker thread, so the server keeps reading requests), others queue up, and
the next batch takes all of them, up to `max_batch` images. When more requests are on
their way in (accepted, not yet queued), it waits up to `max_wait_ms` for them to join.
So throughput grows with load and a lone request never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class Batcher:
    def __init__(
        self,
        probabilities: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 64,
        max_wait_ms: float = 5.0,
    ) -> None:
        self.probabilities = probabilities
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self.arriving = 0  # requests accepted and not yet queued (being read, decoded)
        self.batches = self.images = 0  # counts, for /metadata's statistics
        self._queue: asyncio.Queue | None = None
        self._carried = None  # a request that did not fit the last batch: the next one's first
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities of uint8 images N x H x W, batched with other requests'."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((pixels, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [self._carried or await self._queue.get()]
            self._carried = None
            count = len(items[0][0])
            deadline = time.monotonic() + self.max_wait
            while count < self.max_batch:
                if not self._queue.empty():
                    item = self._queue.get_nowait()
                elif self.arriving and (left := deadline - time.monotonic()) > 0:
                    try:
                        item = await asyncio.wait_for(self._queue.get(), left)
                    except TimeoutError:
                        break
                else:
                    break
                if count + len(item[0]) > self.max_batch:
                    self._carried = item
                    break
                items.append(item)
                count += len(item[0])
            batch = items[0][0] if len(items) == 1 else np.concatenate([i[0] for i in items])
            try:
                probabilities = await loop.run_in_executor(
                    self._executor, self.probabilities, batch
                )
            except Exception as exc:  # the model failed: every request of the batch is told
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.images += count
            start = 0
            for pixels, future in items:
                if not future.done():  # its client may have gone
                    future.set_result(probabilities[start : start + len(pixels)])
                start += len(pixels)
