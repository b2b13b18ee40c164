"""Progress bars: tqdm's notebook widget inside Jupyter (with ipywidgets), text elsewhere.

L3D_PROGRESS=text forces text bars, also inside a kernel: `make notebook` sets it so that papermill's
--log-output shows the bars of a running cell in the terminal (a widget's updates never reach it),
with TQDM_MININTERVAL=10 so that a bar prints a line every 10 seconds rather than ten a second.
"""
import os

if os.environ.get("L3D_PROGRESS", "").strip().lower() == "text":
    from tqdm.std import tqdm
else:
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
