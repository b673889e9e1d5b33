"""Measuring tools for scripts/benchmark.py: peak memory, device synchronization,
interleaved rounds, and the start-up time of the commands."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import torch


class PeakMemory:
    """Peak resident memory of this process (CPU) or peak allocated memory (CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            with open("/proc/self/statm") as handle:
                self.peak = max(self.peak, int(handle.read().split()[1]) * page)
            self._stop.wait(0.02)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(contestants: dict, repeats: int, device: torch.device) -> dict[str, list[dict]]:
    """Run the contestants in turn, `repeats` rounds, interleaved so that a slow spell of
    a shared machine hits all of them alike; return every round of each."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contestants}
    for _ in range(repeats):
        for name, body in contestants.items():
            with PeakMemory(device) as memory:
                row = body()
            row["peak_memory_mib"] = memory.peak / 2**20
            runs[name].append(row)
            print(f"  {name}: {row['seconds_per_epoch']:.2f} s/epoch", file=sys.stderr, flush=True)
    return runs


def median_round(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(rows, key=lambda row: row["seconds_per_epoch"])[len(rows) // 2]


def startup_seconds() -> dict[str, float]:
    """Wall time of `mlp-train --help` and of a config error, in fresh processes."""
    timings = {}
    for name, argv in (("help", ["--help"]), ("config_error", ["--set", "optimizer.lr=-1"])):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "mlptrain.cli.train", *argv], capture_output=True, check=False
        )
        timings[name] = time.perf_counter() - start
    return timings
