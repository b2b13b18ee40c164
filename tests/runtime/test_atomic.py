import os
from pathlib import Path

import pytest

from l3d.runtime.atomic import write_file, write_folder


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_file(target, lambda f: Path(f).write_text("old"))

    def crash(f):
        Path(f).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_file(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_write_folder_renames_into_place_and_keeps_a_copy_that_appeared_first(tmp_path):
    target = tmp_path / "cache" / "model"
    write_folder(target, lambda d: (d / "w.txt").write_text("first"))
    write_folder(target, lambda d: (d / "w.txt").write_text("second"))
    assert (target / "w.txt").read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["model"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc (Linux)")
def test_contents_are_flushed_to_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name)), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", Path(b).name)), real_replace(a, b)))
    write_file(tmp_path / "m.json", lambda f: Path(f).write_text("{}"))
    assert events[0][0] == "fsync" and events[0][1].startswith(".m.json.")           # the temporary file
    assert events[1] == ("replace", "m.json") and events[2] == ("fsync", tmp_path.name)   # then the folder entry
    events.clear()
    write_folder(tmp_path / "ckpt", lambda d: [(d / n).write_text(n) for n in ("a", "b")])
    assert [e for e, _ in events] == ["fsync"] * 3 + ["replace", "fsync"]
    assert [n for _, n in events[:2]] == ["a", "b"] and events[3] == ("replace", "ckpt")
