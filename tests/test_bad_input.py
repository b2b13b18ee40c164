"""Bad input to the public API and the command line is refused with an error naming the offending argument.

Each case is (what is called, the argument it gets wrong, the text the error must contain); every error's
message must name the argument (for the command line: the flag).
"""
import math

import numpy as np
import pytest
import torch

import l3d
import l3d.refit
import l3d.resample
from l3d.cli import main
from l3d.experiments.toys import TMS, sparse_features

SHAPES = {"W": (4, 3), "b": (4,)}


def collector(**kw):
    torch.manual_seed(0)
    return l3d.GradientCollector(TMS().untied(), ["W_in", "W_out", "b"], **kw)


def inputs():
    return sparse_features(32, 5, p_active=0.3, generator=torch.Generator().manual_seed(1))


def source(**kw):
    return l3d.GradientSource(collector(), inputs(), 8, **kw)


def fit(**kw):
    s = source()
    l3d.fit(l3d.Decomposition(s.collector.shapes, 3, seed=0), s, kw.pop("epochs", 1), progress=False, **kw)


def decomposition():
    return l3d.Decomposition(collector().shapes, 3, seed=0)


def a_file(tmp_path):
    (tmp_path / "file").write_text("")
    return tmp_path / "file"


API = [
    # Decomposition
    ("n_subnetworks", lambda t: l3d.Decomposition(SHAPES, 0)),
    ("n_subnetworks", lambda t: l3d.Decomposition(SHAPES, 2.5)),
    ("n_subnetworks", lambda t: l3d.Decomposition(SHAPES, True)),
    ("n_subnetworks", lambda t: l3d.Decomposition(SHAPES, "5")),
    ("rank", lambda t: l3d.Decomposition(SHAPES, 3, rank=2.5)),
    ("rank", lambda t: l3d.Decomposition(SHAPES, 3, rank=None)),
    ("rank", lambda t: l3d.Decomposition(SHAPES, 3, rank=True)),
    ("rank", lambda t: l3d.Decomposition(SHAPES, 3, rank=0)),
    ("rank", lambda t: l3d.Decomposition(SHAPES, 3, rank=9)),
    ("rank", lambda t: l3d.Decomposition(SHAPES, 3, rank={"W": 1})),
    ("top_k", lambda t: l3d.Decomposition(SHAPES, 3, top_k=0)),
    ("top_k", lambda t: l3d.Decomposition(SHAPES, 3, top_k=1.5)),
    ("top_k", lambda t: l3d.Decomposition(SHAPES, 3, top_k=math.nan)),
    ("top_k", lambda t: l3d.Decomposition(SHAPES, 3, top_k="0.1")),
    ("top_k", lambda t: l3d.Decomposition(SHAPES, 3, top_k=True)),
    ("seed", lambda t: l3d.Decomposition(SHAPES, 3, seed=1.5)),
    ("shapes", lambda t: l3d.Decomposition({}, 3)),
    ("top_k", lambda t: l3d.batch_top_k(torch.randn(4, 3), 0)),
    # GradientCollector
    ("divergence", lambda t: collector(divergence="l2")),
    ("reference", lambda t: collector(reference="other")),
    ("engine", lambda t: collector(engine="fast")),
    ("gradient_chunk_size", lambda t: collector(gradient_chunk_size=0)),
    ("gradient_chunk_size", lambda t: collector(gradient_chunk_size=2.5)),
    ("tensors", lambda t: l3d.GradientCollector(TMS().untied(), ["W_hidden"])),
    ("tensors", lambda t: l3d.GradientCollector(torch.nn.Linear(0, 3), "*")),
    ("model", lambda t: l3d.GradientCollector(torch.nn.Linear(3, 2, device="meta"), "*")),
    ("inputs", lambda t: collector()(torch.tensor(1.0))),
    ("inputs", lambda t: collector().outputs(torch.zeros(0, 5))),
    ("inputs", lambda t: l3d.decompose(TMS().untied(), torch.tensor(1.0), "*", l3d.L3DConfig())),
    ("references", lambda t: collector()(inputs(), references=torch.zeros(3, 5))),
    ("forward", lambda t: l3d.GradientCollector(torch.nn.Linear(3, 2), "*",
                                                forward=lambda m, x: m(x)[:, 0])(torch.randn(4, 3))),
    ("sequence", lambda t: l3d.GradientCollector(torch.nn.Linear(3, 6), "*",
                                                 forward=lambda m, x: m(x).view(-1, 2, 3))(torch.randn(4, 3))),
    ("sequence", lambda t: l3d.GradientCollector(torch.nn.Linear(3, 6), "*", sequence=True)(torch.randn(4, 3))),
    ("forward", lambda t: l3d.GradientCollector(
        torch.nn.Linear(3, 2), "*",
        forward=lambda m, x: torch.nn.functional.dropout(m(x), 0.5, training=True))(torch.randn(4, 3))),
    # GradientSource
    ("inputs", lambda t: l3d.GradientSource(collector(), [[0.0] * 5] * 8, 4)),
    ("inputs", lambda t: l3d.GradientSource(collector(), inputs().double(), 8)),
    ("batch_size", lambda t: l3d.GradientSource(collector(), inputs(), 0)),
    ("batch_size", lambda t: l3d.GradientSource(collector(), inputs(), 33)),
    ("batch_size", lambda t: l3d.GradientSource(collector(), inputs(), 8.0)),
    ("chunk_size", lambda t: source(chunk_size=-32)),
    ("chunk_size", lambda t: source(chunk_size=12)),
    ("seed", lambda t: source(seed="1")),
    # fit
    ("epochs", lambda t: fit(epochs=0)),
    ("epochs", lambda t: fit(epochs=2.5)),
    ("lr", lambda t: fit(lr=0)),
    ("lr", lambda t: fit(lr=math.inf)),
    ("lr", lambda t: fit(lr="0.01")),
    ("lr_decay", lambda t: fit(lr_decay=0)),
    ("lr_decay", lambda t: fit(lr_decay=1.5)),
    ("lr_decay_every", lambda t: fit(lr_decay_every=0)),
    ("warm_start_epochs", lambda t: fit(warm_start_epochs=-1)),
    ("silence", lambda t: fit(silence=-1.0)),
    ("silence_from", lambda t: fit(silence_from=-1)),
    ("checkpoint_every", lambda t: fit(checkpoint_dir=t, checkpoint_every=0)),
    ("keep_checkpoints", lambda t: fit(checkpoint_dir=t, keep_checkpoints=0)),
    ("checkpoint_dir", lambda t: fit(checkpoint_dir=a_file(t))),
    ("checkpoint_dir", lambda t: fit(resume=True)),
    ("decomposition", lambda t: l3d.fit(decomposition().double(), source(), 1, progress=False)),
    # impact, intervene
    ("n_ref", lambda t: l3d.impact(decomposition(), collector(), inputs(), n_ref=0)),
    ("n_ref", lambda t: l3d.impact(decomposition(), collector(), inputs(), n_ref=1.5)),
    ("seed", lambda t: l3d.impact(decomposition(), collector(), inputs(), seed="0")),
    ("subnetworks", lambda t: l3d.intervene(collector().model, decomposition(), 7, [0.0], inputs())),
    ("subnetworks", lambda t: l3d.intervene(collector().model, decomposition(), 1.5, [0.0], inputs())),
    ("tensors", lambda t: l3d.intervene(collector().model, decomposition(), 0, [0.0], inputs(), tensors="W_hidden")),
    # data
    ("p_active", lambda t: sparse_features(10, 5, 0.0)),
    ("p_active", lambda t: sparse_features(10, 5, 1.5)),
    ("n_samples", lambda t: sparse_features(2.5, 5)),
    ("n_features", lambda t: sparse_features(10, np.float64(5))),
    # issue 28: seeds torch cannot take, sizes and orders that do not fit, what would hang or mean nothing
    ("p_active", lambda t: sparse_features(10, 5, 1e-9)),
    ("low", lambda t: sparse_features(10, 5, 0.5, low=0.0, high=0.0)),
    ("seed", lambda t: l3d.L3DConfig(seed=2**70)),
    ("seed", lambda t: l3d.Decomposition(SHAPES, 3, seed=2**70)),
    ("seed", lambda t: source(seed=2**70)),
    ("seed", lambda t: l3d.impact(decomposition(), collector(), inputs(), seed=2**70)),
    ("n", lambda t: l3d.top_samples(torch.rand(10, 3), n=-2)),
    ("deltas", lambda t: l3d.intervene(collector().model, decomposition(), 0, [], inputs())),
    ("inputs", lambda t: l3d.impact(decomposition(), collector(), torch.rand(32, 7))),
    ("decomposition", lambda t: l3d.refit.refit_(l3d.Decomposition({"W_in": (2, 5)}, 3), source())),
    ("decomposition", lambda t: l3d.resample.resample_(l3d.Decomposition({"W_in": (2, 5)}, 3), source())),
]


@pytest.mark.parametrize("argument, call", API, ids=[f"{i:02d}-{a}" for i, (a, _) in enumerate(API)])
def test_api_names_the_bad_argument(argument, call, tmp_path):
    with pytest.raises((ValueError, TypeError, NotADirectoryError)) as error:
        call(tmp_path)
    assert argument in str(error.value)


CLI = [
    ("--n-subnetworks", ["--n-subnetworks", "0"]),
    ("--rank", ["--rank", "0"]),
    ("--top-k", ["--top-k", "0"]),
    ("--top-k", ["--top-k", "1.5"]),
    ("--top-k", ["--top-k", "nan"]),
    ("--epochs", ["--epochs", "0"]),
    ("--epochs", ["--epochs", "ten"]),
    ("--batch-size", ["--batch-size", "0"]),
    ("--chunk-size", ["--chunk-size", "0"]),
    ("--chunk-size", ["--batch-size", "8", "--chunk-size", "12"]),
    ("--lr", ["--lr", "0"]),
    ("--lr", ["--lr", "-1e-3"]),
    ("--lr-decay", ["--lr-decay", "0"]),
    ("--lr-decay", ["--lr-decay", "2"]),
    ("--lr-decay-every", ["--lr-decay-every", "0"]),
    ("--warm-start-epochs", ["--warm-start-epochs", "-1"]),
    ("--silence", ["--silence", "-1"]),
    ("--silence", ["--silence", "inf"]),
    ("--silence-from", ["--silence-from", "-1"]),
    ("--checkpoint-every", ["--checkpoint-every", "0"]),
    ("--setup", ["--setup", "l3d.cli.tms"]),
    ("--setup-kwargs", ["--setup-kwargs", "{n_samples: 10}"]),
    ("--setup-kwargs", ["--setup-kwargs", "[10]"]),
    ("--device", ["--device", "bogus"]),
    ("--seed", ["--seed", str(2**70)]),
    ("--out", ["--out", ""]),
    ("--ep", ["--ep", "1"]),   # no abbreviations of --epochs
]


@pytest.mark.parametrize("flag, args", CLI, ids=[f"{i:02d}{f}" for i, (f, _) in enumerate(CLI)])
def test_command_line_names_the_bad_flag_before_any_work(flag, args, tmp_path, monkeypatch, capsys):
    import l3d.cli

    monkeypatch.setattr(l3d.cli, "tms", lambda **kw: pytest.fail("the setup ran before the arguments were checked"))
    with pytest.raises(SystemExit) as exit:
        main(["--out", str(tmp_path / "out"), *args])
    assert exit.value.code == 2
    assert flag in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_command_line_refuses_an_out_that_is_a_file_or_holds_checkpoints(tmp_path, monkeypatch, capsys):
    import l3d.cli

    monkeypatch.setattr(l3d.cli, "tms", lambda **kw: pytest.fail("the setup ran before the arguments were checked"))
    with pytest.raises(SystemExit):
        main(["--out", str(a_file(tmp_path))])
    assert "--out" in capsys.readouterr().err.splitlines()[-1]
    l3d.checkpoint.save_checkpoint(tmp_path / "run" / "checkpoints", 1, l3d.Decomposition(SHAPES, 2), {"step": 1})
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "run")])
    assert "--resume" in capsys.readouterr().err.splitlines()[-1]

