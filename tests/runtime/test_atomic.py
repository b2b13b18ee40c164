import os
import re
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

    def opened(fd):
        return Path(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", opened(fd).name)), paths.append(opened(fd)),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", Path(b).name)), real_replace(a, b)))
    paths = []
    write_file(tmp_path / "m.json", lambda f: Path(f).write_text("{}"))
    # the temporary file, in write_file's own hidden folder beside the target
    assert events[0] == ("fsync", "m.json") and re.fullmatch(r"\.m\.json\.l3d-[a-z0-9_]{8}\.tmp", paths[0].parent.name)
    assert paths[0].parent.parent == tmp_path
    assert events[1] == ("replace", "m.json") and events[2] == ("fsync", tmp_path.name)   # then the folder entry
    events.clear()
    write_folder(tmp_path / "ckpt", lambda d: [(d / n).write_text(n) for n in ("a", "b")])
    assert [e for e, _ in events] == ["fsync"] * 3 + ["replace", "fsync"]
    assert [n for _, n in events[:2]] == ["a", "b"] and events[3] == ("replace", "ckpt")


def test_remove_temporaries_removes_what_write_file_leaves_and_nothing_else(tmp_path, monkeypatch):
    from l3d.runtime.atomic import remove_temporaries

    def killed(f):   # the writer makes its own temporary beside the file (as safetensors does), then "dies"
        Path(f).with_name(".tmpAb12Cd").write_bytes(b"\0" * 5)
        raise KeyboardInterrupt

    monkeypatch.setattr("shutil.rmtree", lambda *a, **k: None)   # a kill: no clean-up runs
    with pytest.raises(KeyboardInterrupt):
        write_file(tmp_path / "decomposition.safetensors", killed)
    monkeypatch.undo()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and re.fullmatch(r"\.decomposition\.safetensors\.l3d-[a-z0-9_]{8}\.tmp", left[0])
    assert [p.name for p in (tmp_path / left[0]).iterdir()] == [".tmpAb12Cd"]   # inside write_file's own folder
    earlier = tmp_path / ".config.json.k2j4h5g6.tmp"     # what an earlier l3d's write_file left
    earlier.write_text("{")
    users = [".notes.tmp", ".draft-v2.tmp", ".config.json.tmp", ".data.k2j4h5g6.tmp", ".tmpXy12Ab", ".x.l3d-notes.tmp"]
    for name in users:
        (tmp_path / name).write_text("mine")
    removed = remove_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([left[0], earlier.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(users)
    assert remove_temporaries(tmp_path / "missing") == []
