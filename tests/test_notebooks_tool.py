"""tools/notebooks.py: the figures an executed notebook's cells saved go into that notebook, each under its cell."""
import importlib.util
import os
from pathlib import Path

import nbformat

TOOL = Path(__file__).resolve().parents[1] / "tools" / "notebooks.py"
spec = importlib.util.spec_from_file_location("notebooks_tool", TOOL)
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def test_each_saved_figure_goes_under_the_cell_that_was_running_and_progress_widgets_go(tmp_path):
    nb = nbformat.v4.new_notebook()
    widget = nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                                                          "text/plain": "L3D:   0%"})
    for start, end in (("2026-11-30T04:00:00+00:00", "2026-11-30T04:00:10+00:00"),
                       ("2026-11-30T04:00:10+00:00", "2026-11-30T04:00:20+00:00")):
        cell = nbformat.v4.new_code_cell("plot()", outputs=[widget])
        cell.metadata["papermill"] = {"start_time": start, "end_time": end}
        nb.cells.append(cell)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    for name, second in (("a.png", 5), ("b.png", 15), ("c.png", 16)):
        (tmp_path / name).write_bytes(b"\x89PNG" + name.encode())
        t = 1_796_011_200 + second   # 2026-11-30T04:00:00Z + second
        os.utime(tmp_path / name, (t, t))
    assert tool.embed_figures(path) == 3
    cells = nbformat.read(path, as_version=4).cells
    assert [[o["data"]["text/plain"] for o in c.outputs] for c in cells] == [["<figure a.png>"], ["<figure b.png>", "<figure c.png>"]]
