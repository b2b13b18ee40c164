from pathlib import Path

import pytest

from l3d.atomic import write_file, write_folder


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
