"""Progress bars: items pass through unchanged; bars only on a terminal, on rank 0, unless VREID_PROGRESS=0."""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch

from vreid import progress
from vreid.progress import block_rows, track, working


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def on_terminal(monkeypatch) -> FakeTerminal:
    """From here on stderr is a terminal and bars open at once; returns what gets drawn on it. (Called in the
    test itself: pytest puts its own stderr back between a fixture's setup and the test.)"""
    fake = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", fake)
    monkeypatch.setattr(progress, "SHOW_AFTER_S", 0.0)
    monkeypatch.setattr(progress, "MIN_STEP_SIZE", 0)
    monkeypatch.delenv(progress.SWITCH, raising=False)
    return fake


def test_track_yields_every_item_and_draws_nothing_off_a_terminal(capfd):
    items = [object() for _ in range(50)]
    assert list(track(iter(items), "loop", total=50)) == items
    blocks = [(0, 3), (3, 7)]
    assert list(track(blocks, "blocks", 7, units=block_rows)) == blocks
    with working("step", size=10 ** 6):
        pass
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_track_draws_a_bar_with_its_description_on_a_terminal(monkeypatch):
    terminal = on_terminal(monkeypatch)
    assert list(track(range(5), "counting things")) == list(range(5))
    assert "counting things" in terminal.getvalue() and "eta" in terminal.getvalue()


def test_nested_bars_share_one_display(monkeypatch):
    terminal = on_terminal(monkeypatch)
    with working("outer step", size=10):
        assert list(track(range(3), "inner loop")) == [0, 1, 2]
    assert "outer step" in terminal.getvalue() and "inner loop" in terminal.getvalue()
    assert progress._live["progress"] is None


def test_switch_and_quick_loops_draw_nothing(monkeypatch):
    terminal = on_terminal(monkeypatch)
    monkeypatch.setenv(progress.SWITCH, "0")
    assert list(track(range(5), "switched off")) == list(range(5))
    monkeypatch.delenv(progress.SWITCH)
    monkeypatch.setattr(progress, "SHOW_AFTER_S", 60.0)
    assert list(track(range(5), "too quick")) == list(range(5))
    assert terminal.getvalue() == ""


def test_ddp_worker_ranks_draw_nothing(monkeypatch):
    terminal = on_terminal(monkeypatch)
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    assert list(track(range(5), "rank one")) == list(range(5))
    assert terminal.getvalue() == ""


def _evaluate():
    from vreid.eval import evaluate

    g = np.random.default_rng(0)
    ids = np.arange(40) % 8
    evaluate(g.normal(size=(40, 8)), g.normal(size=(40, 8)), ids, ids, np.zeros(40), np.ones(40), chunk_size=8)


def _knn():
    from vreid.rerank.knn import knn_torch

    knn_torch(torch.randn(64, 8), 5, chunk_size=16)


def _kreciprocal():
    from vreid.rerank.kreciprocal import expansion_sets
    from vreid.rerank.knn import knn_torch

    expansion_sets(knn_torch(torch.randn(64, 8), 21)[1], 20, block=16)


def _clustering():
    from vreid.unsup import ClusteringConfig, cluster_features

    cluster_features(torch.randn(64, 8), 0.5, ClusteringConfig(k=8, min_samples=2, knn_backend="torch"))


@pytest.mark.parametrize("run, line", [(_evaluate, "evaluating queries"), (_knn, "kNN rows"),
                                       (_kreciprocal, "k-reciprocal expansion"), (_clustering, "clustering 64")])
def test_long_loops_report_progress(monkeypatch, run, line):
    terminal = on_terminal(monkeypatch)
    run()
    assert line in terminal.getvalue()
