"""vreid.fileio reads the umask without setting it (os.umask at import races with threads)."""
from __future__ import annotations

import importlib
import os
import stat

import pytest

import vreid.fileio as fileio


def _os_umask_forbidden(*_args):
    raise AssertionError("os.umask was called")


@pytest.fixture
def no_os_umask(monkeypatch):
    monkeypatch.setattr(os, "umask", _os_umask_forbidden)
    yield
    monkeypatch.undo()
    importlib.reload(fileio)


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_importing_fileio_does_not_call_os_umask(no_os_umask):
    importlib.reload(fileio)


def test_writing_files_and_folders_does_not_call_os_umask(no_os_umask, tmp_path):
    reloaded = importlib.reload(fileio)
    reloaded.write_text_atomic(tmp_path / "a.txt", "x")
    reloaded.give_default_mode(tmp_path)


def test_both_ways_of_reading_the_umask_agree_with_os_umask():
    umask = _current_umask()
    assert fileio._umask_from_probe_file() == umask
    assert fileio._umask_from_proc_status() in (None, umask)


def test_atomic_files_and_default_folders_get_the_umask_modes(tmp_path):
    umask = _current_umask()
    fileio.write_text_atomic(tmp_path / "a.txt", "x")
    fileio.give_default_mode(tmp_path)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o777 & ~umask
