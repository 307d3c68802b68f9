"""Identity batch sampler: P identities x K images per batch, reproducible from (seed, epoch), DDP-sharded, resumable.

An epoch is drawn as one global list of P x K batches from (seed, epoch) alone, so it does not depend on the
number of ranks or workers. Invariants, for the labels >= 0 (label -1 = left out, e.g. clustering outliers):

- every batch has P distinct labels and K indices of each (in label blocks: batch[j*K:(j+1)*K] share a label);
- every label appears in at least one batch of every epoch, and every image appears at least once;
- a label with fewer than K images fills its K slots by sampling its images with replacement;
- the global batch list is padded with extra batches to a multiple of world_size; rank r takes global
  batches r, r + world_size, ... so the shards are disjoint, equal in size, and together cover the list;
- `start_batch` b (counted in this rank's batches) yields exactly the tail of the rank's full epoch from b.

Each element yielded is `(index, sample_seed)`: the record index and a seed drawn with the batch list, which
the dataset uses to seed its augmentations, so a sample's augmentation does not depend on the worker count.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


class IdentityBatchSampler:
    """Batch sampler for torch DataLoader(batch_sampler=...): yields lists of (index, sample_seed)."""

    def __init__(self, labels: Sequence[int], ids_per_batch: int, images_per_id: int, seed: int = 0,
                 epoch: int = 0, rank: int = 0, world_size: int = 1, start_batch: int = 0) -> None:
        if ids_per_batch < 1 or images_per_id < 1:
            raise ValueError("ids_per_batch and images_per_id must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.P, self.K = int(ids_per_batch), int(images_per_id)
        self.seed, self.epoch = int(seed), int(epoch)
        self.rank, self.world_size = int(rank), int(world_size)
        self.start_batch = int(start_batch)
        self.set_labels(labels)

    def set_labels(self, labels: Sequence[int]) -> None:
        """Replace the labels (after a pseudo-label refresh); -1 marks an image to leave out."""
        groups: dict[int, list[int]] = {}
        for i, lab in enumerate(labels):
            if lab >= 0:
                groups.setdefault(int(lab), []).append(i)
        self.groups = [np.asarray(groups[k], dtype=np.int64) for k in sorted(groups)]
        self.group_labels = sorted(groups)
        if len(self.groups) < self.P:
            from vreid.config.loader import ConfigError

            raise ConfigError(f"key 'data.ids_per_batch': only {len(self.groups)} identities have a label >= 0 but "
                              f"ids_per_batch={self.P}; lower data.ids_per_batch to at most {len(self.groups)}",
                              key="data.ids_per_batch")
        self._cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    # ----- the global epoch plan ---------------------------------------------------------------------------
    def _chunks(self, rng: np.random.Generator, g: int) -> list[np.ndarray]:
        """Shuffled K-image chunks of one identity covering all its images (the last one topped up)."""
        idx = self.groups[g]
        if len(idx) < self.K:  # all its images, then repeats drawn with replacement
            return [rng.permutation(np.concatenate([idx, rng.choice(idx, size=self.K - len(idx), replace=True)]))]
        perm = rng.permutation(idx)
        n_full = len(perm) // self.K
        chunks = [perm[i * self.K:(i + 1) * self.K] for i in range(n_full)]
        rest = perm[n_full * self.K:]
        if len(rest):
            fill = rng.choice(perm[:n_full * self.K], size=self.K - len(rest), replace=False)
            chunks.append(np.concatenate([rest, fill]))
        return chunks

    def global_batches(self) -> tuple[np.ndarray, np.ndarray]:
        """(batches, seeds): int64 arrays of shape (B, P*K) for the whole epoch, from (seed, epoch) only."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1], self._cache[2]
        rng = np.random.default_rng([self.seed, self.epoch, 0x5EED])
        pending = [self._chunks(rng, g) for g in range(len(self.groups))]
        batches: list[np.ndarray] = []
        available = list(range(len(pending)))  # identities with chunks left; removal by swapping with the last
        where = {g: g for g in available}
        while available:
            if len(available) >= self.P:
                chosen = [available[j] for j in rng.choice(len(available), size=self.P, replace=False)]
            else:
                # fewer identities left than P: finish them, topping up with fresh chunks of other identities
                left = set(available)
                others = [g for g in range(len(pending)) if g not in left]
                chosen = available + [others[j] for j in
                                      rng.choice(len(others), size=self.P - len(available), replace=False)]
            batch = []
            for g in chosen:
                if pending[g]:
                    batch.append(pending[g].pop())
                    if not pending[g]:
                        j, last = where.pop(g), available[-1]
                        available[j] = last
                        if last != g:
                            where[last] = j
                        available.pop()
                else:
                    batch.append(self._chunks(rng, g)[0])
            batches.append(np.concatenate(batch))
        seeds = list(rng.integers(0, 2**31 - 1, size=(len(batches), self.P * self.K), dtype=np.int64))
        # padding to a multiple of world_size draws from its own stream: the first batches and their sample
        # seeds are the same for any world size
        pad_rng = np.random.default_rng([self.seed, self.epoch, 0x9AD, self.world_size])
        while len(batches) % self.world_size:
            chosen = pad_rng.choice(len(pending), size=self.P, replace=False)
            batches.append(np.concatenate([self._chunks(pad_rng, int(g))[0] for g in chosen]))
            seeds.append(pad_rng.integers(0, 2**31 - 1, size=self.P * self.K, dtype=np.int64))
        out, seeds = np.stack(batches).astype(np.int64), np.stack(seeds)
        self._cache = (self.epoch, out, seeds)
        return out, seeds

    # ----- this rank's view ---------------------------------------------------------------------------------
    @property
    def batches_per_epoch(self) -> int:
        """This rank's number of batches in a full epoch (the same on every rank)."""
        return len(self.global_batches()[0]) // self.world_size

    def __len__(self) -> int:
        return max(self.batches_per_epoch - self.start_batch, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batches, seeds = self.global_batches()
        for b in range(self.rank + self.start_batch * self.world_size, len(batches), self.world_size):
            yield [(int(i), int(s)) for i, s in zip(batches[b], seeds[b])]
