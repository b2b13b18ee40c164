"""The dashboard's per-subnetwork notes (collect(notes=...)): a line added to each subnetwork's summary, e.g. where a
whole-model subnetwork's decoder lives (notebook 08)."""
import json

import pytest
import torch

import l3d
from l3d.experiments.cnn import DIGITS_BLOCK, DigitsCNN, digits
from l3d.report.dashboard import DATA, collect, render


def test_notes_end_each_summary_on_the_index_and_the_subnetwork_pages(tmp_path):
    torch.manual_seed(0)
    model = DigitsCNN().eval().requires_grad_(False)
    pixels, labels, _ = digits(0)
    collector = l3d.GradientCollector(model, DIGITS_BLOCK, divergence="kl")
    decomposition = l3d.Decomposition(collector.shapes, 3, 2, 0.1, seed=0)
    options = dict(n_ref=2, seed=3, n_top=4, deltas=[-1.0, 1.0], labels=labels[:24],
                   label_names=[str(d) for d in range(10)])
    plain = json.loads((collect(tmp_path / "plain", decomposition, collector, pixels[:24], **options)
                        / DATA).read_text())
    notes = ["layer 0 100%", "layer 1 75% · layer 0 25%", ""]
    folder = collect(tmp_path / "noted", decomposition, collector, pixels[:24], notes=notes, **options)
    noted = json.loads((folder / DATA).read_text())
    for before, after, note in zip(plain["subnetworks"], noted["subnetworks"], notes, strict=True):
        assert after["summary"] == (f"{before['summary']} · {note}" if note else before["summary"])
    assert ({k: v for k, v in noted.items() if k != "subnetworks"}
            == {k: v for k, v in plain.items() if k != "subnetworks"})
    assert "layer 1 75% · layer 0 25%" in render(folder).read_text(encoding="utf-8")
    with pytest.raises(ValueError, match=r"notes must give one line per subnetwork \(3\), got 2"):
        collect(tmp_path / "bad", decomposition, collector, pixels[:24], notes=notes[:2], **options)
