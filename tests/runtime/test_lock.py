"""One process at a time in a run folder: the second is refused at once, by name, and nothing is left behind."""
import subprocess
import sys

import pytest

from l3d.runtime.lock import FolderInUse, exclusive


def test_a_second_holder_is_refused_until_the_first_lets_go(tmp_path):
    folder = tmp_path / "run"
    with exclusive(folder, "--out"):
        assert folder.is_dir()
        code = ("import sys\nfrom l3d.runtime.lock import FolderInUse, exclusive\ntry:\n"
                "    with exclusive(sys.argv[1], '--out'): print('held')\nexcept FolderInUse as e: print(e)")
        done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True)
        assert done.stdout.strip() == (f"another process is using --out {str(folder)!r} (it holds the folder's lock): "
                                       f"wait for it to finish, or stop it, or choose another --out"), done.stderr
        with pytest.raises(FolderInUse):   # also a second open of it in this process
            with exclusive(folder):
                pass
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True)
    assert done.stdout.strip() == "held"
    assert list(folder.iterdir()) == []   # no lock file
