"""Files timed in turns: the interleaved timer `toolkit gate` re-measures a baseline and a new artifact with
(and any comparison of two files on one machine should use). Each round is a fresh worker process that loads
every file, warms each up and times them in turns, so whatever else the machine does meanwhile falls on all
of them alike; the order is reversed every other round. The statistics on the samples are the caller's
(toolkit/gate.py: a ratio of medians with its interval)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np

from toolkit.timing import measure


def measure_interleaved(runtime_name: str, paths: list[str], device: str, threads: int, batch: int,
                        images: np.ndarray, blocks: int, block_seconds: float, warmup_seconds: float) -> list[list[int]]:
    """In a fresh process: load every file in ``paths`` in the runtime, warm each up, then time them in
    turns (A B A B ..., ``blocks`` blocks each of at least ``block_seconds``), so that whatever else the
    machine does meanwhile falls on all of them alike. Returns every sample (ns) of each file. What
    `toolkit gate` re-measures a baseline and a new artifact with."""
    from toolkit import runners

    runtime = runners.get(runtime_name)
    loaded = [runtime.load(p, device=device, threads=threads) for p in paths]
    calls = []
    for runner in loaded:
        x = runner.prepare(images[:batch])
        calls.append(lambda runner=runner, x=x: runner.run_raw(x))
    for call in calls:
        measure(call, warmup_runs=3, warmup_seconds=warmup_seconds, min_runs=1, min_seconds=0, max_runs=1)
    samples: list[list[int]] = [[] for _ in calls]
    for _ in range(blocks):
        for i, call in enumerate(calls):
            samples[i] += measure(call, warmup_runs=0, warmup_seconds=0, min_runs=5, min_seconds=block_seconds,
                                  max_runs=100_000)["samples_ns"]
    return samples


def run_interleaved(runtime_name: str, paths: list[Path], threads: int, batch: int, images: np.ndarray, *,
                    rounds: int, blocks: int = 4, block_seconds: float = 0.1, warmup_seconds: float = 0.2,
                    device: str = "cpu") -> list[list[list[int]]]:
    """``rounds`` fresh worker processes of ``measure_interleaved``, the order of the files reversed in
    every other round (ABAB..., then BABA...): samples[round][file]."""
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    out = []
    for r in range(rounds):
        order = list(range(len(paths)))[:: 1 if r % 2 == 0 else -1]
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            samples = pool.submit(measure_interleaved, runtime_name, [str(paths[i]) for i in order], device,
                                  threads, batch, images, blocks, block_seconds, warmup_seconds).result()
        out.append([samples[order.index(i)] for i in range(len(paths))])
    return out
