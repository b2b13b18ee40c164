"""A browsable, self-contained HTML dashboard of a fitted decomposition: one page per decomposition.

Two steps, so that nothing computed is lost when the page changes:

    folder = collect(out_dir / "dashboard", decomposition, collector, inputs, history=history, ...)
    render(folder)                      # writes folder/index.html from the saved data
    python -m l3d.report.dashboard RUN_DIR     # re-renders from the saved data, no model needed

`collect` computes everything the page shows from the decomposition, the gradient collector (which
holds the model and its forward) and held-out inputs, and saves it as plain data: `data.json`, and for
image models `images.safetensors` with the shown images. `render` turns that into one HTML file with
its CSS, JavaScript, charts (inline SVG) and thumbnails (base64 PNG) inside: no server, no network.

The page has an index of all subnetworks (P_act, mean impact, dead or live, a one-line summary;
columns sort on click), the training history, and a page per subnetwork (address `index.html#s/K`):
impact histogram, the top samples by impact (texts with every token shaded by the impact on
predicting it, images, or input vectors), the outputs its decoder direction raises and lowers most
(∂f/∂δ at δ = 0), an intervention sweep, the subnetworks it is most often active with, and for toys
the |cos| to each ground-truth circuit. Each sample links to a page of its own (`#x/ID`: the text,
image or vector with the subnetworks of largest impact on it).

compute.py    `collect`: the core every kind of input shares
kinds.py      what vectors, images and texts each add (their items, rows, summaries, saved files)
measures.py   measurements on the model: output effects of a decoder direction, co-activation, circuit |cos|
data.py       the saved data's files and format; `load`
page.py       `render`: page.html filled with page.css, page.js and the data; `png`
cli.py        the command line
"""
from .cli import main
from .compute import collect
from .data import DATA, FORMAT, IMAGES, INDEX, load
from .measures import feature_circuits
from .page import png, render

__all__ = ["DATA", "FORMAT", "IMAGES", "INDEX", "collect", "feature_circuits", "load", "main", "png", "render"]
