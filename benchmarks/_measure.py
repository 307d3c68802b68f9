"""Shared helpers for the scale benchmarks: clustered random features and peak-memory readings."""
from __future__ import annotations

import resource

import numpy as np
import torch


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def clustered_split(num_query: int, num_gallery: int, dim: int, num_ids: int, spread: float, seed: int = 0):
    """Gaussian identity centres (scale `spread`) plus unit noise; every query id has gallery images."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_ids, dim, generator=g) * spread
    rng = np.random.default_rng(seed)
    g_ids = rng.permutation(np.arange(num_gallery) % num_ids)
    q_ids = rng.integers(0, num_ids, num_query)
    gf = torch.randn(num_gallery, dim, generator=g).add_(centres[torch.from_numpy(g_ids)])
    qf = torch.randn(num_query, dim, generator=g).add_(centres[torch.from_numpy(q_ids)])
    cams = rng.integers(0, 174, num_query + num_gallery)  # VeRi-Wild has 174 cameras
    return qf, gf, q_ids, g_ids, cams[:num_query], cams[num_query:]


def run_child(cmd: list[str]) -> tuple[dict | None, str]:
    """Run one measurement in a fresh process (so its peak RSS is its own): (the JSON of its last stdout line,
    "") on success, (None, the last line of its stderr) on failure."""
    import json
    import subprocess

    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return None, lines[-1] if lines else f"exit status {proc.returncode}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""
