"""Identity sampler invariants: P x K batches, full coverage, determinism, DDP shards, mid-epoch resume."""
from __future__ import annotations

import numpy as np
import pytest

from vreid.data import IdentityBatchSampler

# 12 identities with 1..9 images, two outliers (-1) that must never be drawn
LABELS = [lab for lab in range(12) for _ in range(1 + (lab * 5) % 9)] + [-1, -1]
P, K = 4, 3


def indices(batch):
    return [i for i, _ in batch]


def test_every_batch_is_p_ids_by_k_images():
    s = IdentityBatchSampler(LABELS, P, K, seed=1)
    batches = list(s)
    assert len(batches) == s.batches_per_epoch == len(s) > 0
    for b in batches:
        labs = np.array([LABELS[i] for i in indices(b)]).reshape(P, K)
        assert (labs == labs[:, :1]).all()  # K images of one identity per block
        assert len(set(labs[:, 0])) == P  # P distinct identities
        assert (labs >= 0).all()  # outliers left out


def test_epoch_covers_every_identity_and_image():
    for epoch in range(3):
        drawn = {i for b in IdentityBatchSampler(LABELS, P, K, seed=0, epoch=epoch) for i in indices(b)}
        assert {LABELS[i] for i in drawn} == set(range(12))
        assert drawn == {i for i, lab in enumerate(LABELS) if lab >= 0}


def test_small_identity_is_sampled_with_replacement():
    labels = [0, 1, 1, 1, 2, 2, 2]  # identity 0 has one image, K = 3
    for b in IdentityBatchSampler(labels, 2, 3, seed=0):
        idx = indices(b)
        if 0 in idx:
            assert idx.count(0) == 3


def test_deterministic_by_seed_and_epoch():
    a = list(IdentityBatchSampler(LABELS, P, K, seed=5, epoch=2))
    assert a == list(IdentityBatchSampler(LABELS, P, K, seed=5, epoch=2))
    assert a != list(IdentityBatchSampler(LABELS, P, K, seed=5, epoch=3))
    assert a != list(IdentityBatchSampler(LABELS, P, K, seed=6, epoch=2))
    s = IdentityBatchSampler(LABELS, P, K, seed=5, epoch=0)
    s.set_epoch(2)
    assert list(s) == a


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shards_are_disjoint_equal_and_cover_the_global_list(world_size):
    glob, seeds = IdentityBatchSampler(LABELS, P, K, seed=3, world_size=world_size).global_batches()
    shards = [list(IdentityBatchSampler(LABELS, P, K, seed=3, rank=r, world_size=world_size))
              for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1
    assert sum(len(s) for s in shards) == len(glob)
    seen = [b for s in shards for b in s]
    as_tuples = sorted(tuple(x for pair in b for x in pair) for b in seen)
    expected = sorted(tuple(x for pair in zip(bi, si) for x in pair) for bi, si in zip(glob.tolist(), seeds.tolist()))
    assert as_tuples == expected
    # the unpadded epoch is the single-process epoch: the same batches for any world size
    single, single_seeds = IdentityBatchSampler(LABELS, P, K, seed=3).global_batches()
    assert np.array_equal(glob[:len(single)], single) and np.array_equal(seeds[:len(single)], single_seeds)


def test_resume_mid_epoch_is_the_tail_of_the_full_epoch():
    full = list(IdentityBatchSampler(LABELS, P, K, seed=9, epoch=1, rank=1, world_size=2))
    for b in (0, 1, len(full) - 1, len(full)):
        tail = IdentityBatchSampler(LABELS, P, K, seed=9, epoch=1, rank=1, world_size=2, start_batch=b)
        assert list(tail) == full[b:] and len(tail) == len(full) - b
        assert tail.batches_per_epoch == len(full)


def test_sample_seeds_differ_within_an_epoch_and_follow_the_seed():
    seeds = [s for b in IdentityBatchSampler(LABELS, P, K, seed=0) for _, s in b]
    assert len(set(seeds)) > 0.95 * len(seeds)
    assert seeds != [s for b in IdentityBatchSampler(LABELS, P, K, seed=0, epoch=1) for _, s in b]


def test_relabel_and_too_few_identities():
    s = IdentityBatchSampler(LABELS, P, K, seed=0)
    s.set_labels([0] * 5 + [1] * 5 + [2] * 5 + [3] * 5)
    assert {i for b in s for i in indices(b)} == set(range(20))
    with pytest.raises(ValueError, match="only 2 identities"):
        IdentityBatchSampler([0, 0, 1, 1, -1], P, K)
