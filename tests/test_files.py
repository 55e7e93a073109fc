"""cifar_core.files: the one atomic writer every other writer goes through."""
from __future__ import annotations

import threading

import pytest

from cifar_core.files import replace_atomically


def test_racing_writers_each_land_whole_and_leave_nothing_behind(tmp_path):
    target = tmp_path / "status.json"
    texts = [f"writer {i} " * 2000 for i in range(16)]
    go = threading.Barrier(len(texts))

    def writer(text: str) -> None:
        go.wait()
        for _ in range(20):
            replace_atomically(target, lambda tmp: tmp.write_text(text))

    threads = [threading.Thread(target=writer, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_text() in texts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("the old model")

    def half_then_fail(tmp):
        tmp.write_text("half a mod")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        replace_atomically(target, half_then_fail)
    assert target.read_text() == "the old model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_a_folder_replaces_a_folder_with_files(tmp_path):
    target = tmp_path / "saved_model"
    target.mkdir()
    (target / "old.pb").write_text("old")

    def build(tmp):
        tmp.mkdir()
        (tmp / "new.pb").write_text("new")

    replace_atomically(target, build)
    assert [p.name for p in target.iterdir()] == ["new.pb"]
    assert [p.name for p in tmp_path.iterdir()] == ["saved_model"]


def test_a_failed_folder_write_keeps_the_old_folder_whole(tmp_path):
    target = tmp_path / "saved_model"
    target.mkdir()
    (target / "saved_model.pb").write_bytes(b"the previous export")

    def half_then_fail(tmp):
        tmp.mkdir()
        (tmp / "x").write_bytes(b"half a flatbuffer")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        replace_atomically(target, half_then_fail)
    assert [p.name for p in tmp_path.iterdir()] == ["saved_model"]
    assert (target / "saved_model.pb").read_bytes() == b"the previous export"
