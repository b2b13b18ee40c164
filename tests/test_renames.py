"""Renamed setting values (issue 29): decoder_norm "authors" is now "sum", divergence "mse_authors" is now
"output_times_residual". The old spellings are still read everywhere a user can give them (settings, the
collector, the command line, saved decompositions, checkpoints), with a DeprecationWarning naming the new one,
and are turned into the new ones at once."""
import json

import pytest
import torch

import l3d
from l3d.checkpoint import _sha256_json
from l3d.cli import main
from l3d.divergences import divergence
from l3d.experiments import toys
from l3d.runtime.atomic import sha256_file

OLD = {"decoder_norm": "authors", "divergence": "mse_authors"}
NEW = {"decoder_norm": "sum", "divergence": "output_times_residual"}


def _toy(n: int = 64):
    x = toys.sparse_features(n, 10, generator=torch.Generator().manual_seed(0))
    return toys.circuit_superposition(variant="paper_text"), x


@pytest.mark.parametrize("name", ["decoder_norm", "divergence"])
def test_the_old_spelling_warns_naming_the_new_one_and_is_stored_as_it(name):
    with pytest.warns(DeprecationWarning, match=rf"{name}='{OLD[name]}' is deprecated, renamed '{NEW[name]}'"):
        config = l3d.L3DConfig(**{name: OLD[name]})
    assert getattr(config, name) == NEW[name] and config == l3d.L3DConfig(**{name: NEW[name]})
    assert config.to_dict()[name] == NEW[name]
    with pytest.warns(DeprecationWarning):   # the notebooks' path too
        assert getattr(l3d.L3DConfig.from_parameters({name: OLD[name]}), name) == NEW[name]


def test_bad_values_are_refused_naming_the_new_spellings():
    with pytest.raises(ValueError, match=r"decoder_norm must be one of \['unit', 'sum'\], got 'l1'"):
        l3d.L3DConfig(decoder_norm="l1")
    with pytest.raises(ValueError, match=r"divergence must be one of \['mse', 'output_times_residual', 'kl'\]"):
        l3d.L3DConfig(divergence="mse_author")
    with pytest.raises(ValueError, match=r"decoder_norm must be 'unit' .* or 'sum' .*, got 'l1'"):
        l3d.Decomposition({"w": (2, 2)}, 2, decoder_norm="l1")
    model, _ = _toy()
    with pytest.raises(ValueError, match=r"use one of \('mse', 'output_times_residual', 'kl'\)"):
        l3d.GradientCollector(model, "*", divergence="mse_author")


def test_the_collector_the_divergence_and_the_decomposition_read_the_old_spellings():
    model, x = _toy()
    with pytest.warns(DeprecationWarning, match="output_times_residual"):
        collector = l3d.GradientCollector(model, "*", divergence="mse_authors")
    assert collector.divergence == "output_times_residual"
    y, r = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.warns(DeprecationWarning):
        assert torch.equal(divergence(y, r, "mse_authors"), divergence(y, r, "output_times_residual"))
    with pytest.warns(DeprecationWarning):
        refs = l3d.reference_outputs(y, "mse_authors", "random_or_self", torch.Generator().manual_seed(0))
    assert torch.equal(refs, l3d.reference_outputs(y, "output_times_residual", "random_or_self",
                                                   torch.Generator().manual_seed(0)))
    with pytest.warns(DeprecationWarning, match="'sum'"):
        old = l3d.Decomposition({"w": (4, 3)}, 3, seed=1, decoder_norm="authors")
    assert old.decoder_norm == "sum" and old.config["decoder_norm"] == "sum"


def test_the_old_spellings_give_the_same_run_to_the_bit():
    model, x = _toy()
    settings = dict(n_subnetworks=3, epochs=3, batch_size=16, reference="random_or_self", batch_references=True)
    with pytest.warns(DeprecationWarning):
        old = l3d.decompose(model, x, "*", l3d.L3DConfig(**settings, **OLD), progress=False)
    new = l3d.decompose(model, x, "*", l3d.L3DConfig(**settings, **NEW), progress=False)
    assert old.config == new.config and old.fingerprints == new.fingerprints
    assert old.history.reconstruction_error == new.history.reconstruction_error
    for a, b in zip(old.decomposition.parameters(), new.decomposition.parameters()):
        assert torch.equal(a, b)


def test_a_decomposition_saved_with_the_old_spelling_loads(tmp_path):
    dec = l3d.Decomposition({"w": (4, 3, 2)}, n_subnetworks=3, rank=1, seed=1, decoder_norm="sum")
    dec.save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["decoder_norm"] == "sum"
    (tmp_path / "config.json").write_text(json.dumps({**config, "decoder_norm": "authors"}, indent=1))
    with pytest.warns(DeprecationWarning, match="'sum'"):
        loaded = l3d.Decomposition.load(tmp_path)
    assert loaded.decoder_norm == "sum" and loaded.config == dec.config
    for a, b in zip(loaded.parameters(), dec.parameters()):
        assert torch.equal(a, b)


def _spell_old(value):
    """`value` (a checkpoint's recorded settings) as a checkpoint written before the renames has it."""
    if isinstance(value, dict):
        return {k: OLD[k] if k in OLD and value[k] == NEW[k] else _spell_old(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_spell_old(v) for v in value]
    return value


@pytest.mark.parametrize("spelling", ["new", "old"])
def test_a_checkpoint_written_with_the_old_spellings_resumes(tmp_path, spelling):
    model, x = _toy()
    settings = dict(n_subnetworks=3, batch_size=16, reference="random_or_self")
    whole = l3d.decompose(model, x, "*", l3d.L3DConfig(epochs=3, **settings, **NEW), progress=False)
    l3d.decompose(model, x, "*", l3d.L3DConfig(epochs=2, **settings, **NEW), checkpoint_dir=tmp_path,
                  checkpoint_every=1, progress=False)
    # make the newest checkpoint one written before the renames: old spellings in training.json and config.json
    newest = l3d.checkpoint.checkpoints(tmp_path)[-1]
    config = json.loads((newest / "config.json").read_text())
    (newest / "config.json").write_text(json.dumps(_spell_old(config)))
    record = json.loads((newest / "training.json").read_text())
    written = record["state"]["settings"]
    assert written["config"]["decoder_norm"] == "sum"
    written = record["state"]["settings"] = _spell_old(written)
    assert written["config"]["divergence"] == written["gradients"]["divergence"] == "mse_authors"
    assert written["config"]["decoder_norm"] == written["decomposition"]["decoder_norm"] == "authors"
    hashes = record.pop("sha256")
    hashes["config.json"] = sha256_file(newest / "config.json")
    hashes["training.json"] = _sha256_json(record)
    (newest / "training.json").write_text(json.dumps({**record, "sha256": hashes}))
    names = OLD if spelling == "old" else NEW
    with pytest.warns(DeprecationWarning):
        resumed = l3d.decompose(model, x, "*", l3d.L3DConfig(epochs=3, **settings, **names), checkpoint_dir=tmp_path,
                                resume=True, progress=False)
    assert resumed.history.reconstruction_error == whole.history.reconstruction_error
    for a, b in zip(resumed.decomposition.parameters(), whole.decomposition.parameters()):
        assert torch.equal(a, b)


SMALL = ["--setup-kwargs", '{"n_samples": 64, "toy_epochs": 2}', "--epochs", "1", "--batch-size", "16",
         "--n-subnetworks", "3", "--device", "cpu", "--no-dashboard"]


def test_the_command_line_reads_the_old_spellings_and_says_so(tmp_path, capsys):
    main(["--out", str(tmp_path), *SMALL, "--decoder-norm", "authors", "--divergence", "mse_authors"])
    err = capsys.readouterr().err
    assert "decoder_norm='authors' is deprecated, renamed 'sum'" in err
    assert "divergence='mse_authors' is deprecated, renamed 'output_times_residual'" in err
    config = json.loads((tmp_path / "decomposition" / "run.json").read_text())["config"]
    assert (config["decoder_norm"], config["divergence"]) == ("sum", "output_times_residual")
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "bad"), *SMALL, "--decoder-norm", "l1"])
    assert "--decoder-norm must be one of ['unit', 'sum'], got 'l1'" in capsys.readouterr().err


def test_the_collectors_chunk_size_is_now_gradient_chunk_size():
    """GradientCollector's items per vectorized computation is gradient_chunk_size, as in L3DConfig; chunk_size is
    GradientSource's and L3DConfig's items per gradient pass only. The collector's old keyword and attribute warn."""
    model, x = _toy()
    new = l3d.GradientCollector(model, "*", gradient_chunk_size=16)
    with pytest.warns(DeprecationWarning, match="renamed gradient_chunk_size"):
        old = l3d.GradientCollector(model, "*", chunk_size=16)
    assert old.gradient_chunk_size == new.gradient_chunk_size == 16
    with pytest.warns(DeprecationWarning, match="renamed gradient_chunk_size"):
        assert old.chunk_size == 16
    refs = new.outputs(x).roll(1, 0)
    torch.testing.assert_close(old(x, references=refs).dense().flat(), new(x, references=refs).dense().flat(),
                               rtol=0, atol=0)
    with pytest.raises(TypeError, match="not also its old name chunk_size"):
        l3d.GradientCollector(model, "*", gradient_chunk_size=8, chunk_size=16)
    with pytest.raises(ValueError, match="gradient_chunk_size must be at least 1"):
        l3d.GradientCollector(model, "*", gradient_chunk_size=0)
