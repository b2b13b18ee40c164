"""Issue 16, items 1-7, 11 and 12: each test fails on the code before the fix (see the commit message)."""
import ast
import json
import os
import signal
import stat
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import l3d
from l3d.experiments.toys import TMS, sparse_features
from l3d.runtime.atomic import write_file, write_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TENSORS = ["W_in", "W_out", "b"]


def tms_source(model=None, n=32, **kw):
    torch.manual_seed(0)
    collector = l3d.GradientCollector(model or TMS().untied(), TENSORS)
    inputs = sparse_features(n, 5, p_active=0.3, generator=torch.Generator().manual_seed(1))
    return l3d.GradientSource(collector, inputs, 8, **kw)


class ReorderedTMS(nn.Module):
    """The untied TMS with its tensors registered in another order (b, W_out, W_in)."""

    def __init__(self, model: TMS):
        super().__init__()
        self.b = nn.Parameter(model.b.detach().clone())
        self.W_out = nn.Parameter(model.W_out.detach().clone())
        self.W_in = nn.Parameter(model.W_in.detach().clone())

    def forward(self, x):
        return torch.relu(x @ self.W_in.T @ self.W_out.T + self.b)


# --- 1. tensor order --------------------------------------------------------------------------------------
def test_1_another_tensor_order_is_refused():
    decomposition = l3d.Decomposition({"a": (2, 3), "b": (3,)}, 2)
    decomposition.check_shapes({"a": (2, 3), "b": (3,)})
    with pytest.raises(ValueError, match=r"tensor order differs: decomposition \['a', 'b'\], the model \['b', 'a'\]"):
        decomposition.check_shapes({"b": (3,), "a": (2, 3)})
    source = tms_source()
    decomposition = l3d.Decomposition(source.collector.shapes, 3, seed=0)
    reordered = l3d.GradientSource(l3d.GradientCollector(ReorderedTMS(source.collector.model), TENSORS),
                                   source.inputs, 8)
    assert list(reordered.collector.shapes) == ["b", "W_out", "W_in"]
    with pytest.raises(ValueError, match=r"tensor order differs"):
        l3d.evaluate(decomposition, reordered)
    with pytest.raises(ValueError, match=r"tensor order differs"):
        l3d.fit(decomposition, reordered, 1, progress=False)


# --- 2. impact and intervene check shapes -------------------------------------------------------------------
def test_2_impact_and_intervene_refuse_a_decomposition_of_other_shapes():
    source = tms_source()
    # the same element counts, other shapes: W_in and W_out transposed
    other = l3d.Decomposition({"W_in": (5, 2), "W_out": (2, 5), "b": (5,)}, 3, seed=0)
    with pytest.raises(ValueError, match=r"does not fit the collector's tensors: "
                                         r"W_in: decomposition \(5, 2\), the collector \(2, 5\)"):
        l3d.impact(other, source.collector, source.inputs, n_ref=1)
    model = source.collector.model
    with pytest.raises(ValueError,
                       match=r"does not fit the model's tensors: W_in: decomposition \(5, 2\), the model \(2, 5\)"):
        l3d.intervene(model, other, 0, [0.0, 1.0], source.inputs)
    with pytest.raises(ValueError, match=r"does not fit the model's tensors"):
        l3d.output_derivative(model, other, 0, source.inputs)
    right = l3d.Decomposition(source.collector.shapes, 3, seed=0)
    assert l3d.impact(right, source.collector, source.inputs, n_ref=1).shape == (32, 3)
    moved = [l3d.intervene(model, right, k, [1.0], source.inputs)
             for k in ([0, 2], np.array([0, 2]), torch.tensor([0, 2]))]
    assert all(torch.equal(m, moved[0]) for m in moved)


# --- 3. sparse_features with p_active = 0 ---------------------------------------------------------------------
def test_3_sparse_features_with_p_active_0_is_refused_not_a_hang():
    def hang(signum, frame):
        raise TimeoutError("sparse_features did not return within 5 s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(5)
    try:
        with pytest.raises(ValueError, match=r"p_active = 0 makes every sample all zero"):
            sparse_features(10, 5, 0.0)
        with pytest.raises(ValueError, match=r"p_active is a probability and must lie in \[0, 1\], got 1.5"):
            sparse_features(10, 5, 1.5)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert sparse_features(10, 5, 0.0, drop_zero=False).eq(0).all()


# --- 4. chunk_size ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [-32, -8, 0, 12])
def test_4_a_chunk_size_that_is_not_a_positive_multiple_of_the_batch_is_refused(chunk_size):
    with pytest.raises(ValueError,
                       match=rf"chunk_size {chunk_size} must be a multiple of batch_size 8 \(or None: batch_size\)"):
        tms_source(chunk_size=chunk_size)
    assert tms_source(chunk_size=16).chunk_size == 16 and tms_source().chunk_size == 8


# --- 5. notebook parameters -----------------------------------------------------------------------------------
NOTEBOOKS = sorted(n for n in os.listdir(os.path.join(ROOT, "notebooks")) if n[:2].isdigit() and n.endswith(".ipynb"))
SMALL = json.load(open(os.path.join(ROOT, "notebooks", "test_parameters.json")))


def run_checks(notebook: str, **overrides) -> None:
    """The parameters cell (with the test parameters and `overrides`) and the cell that builds the settings."""
    cells = [c for c in json.load(open(os.path.join(ROOT, "notebooks", notebook)))["cells"] if c["cell_type"] == "code"]
    assert "parameters" in cells[0]["metadata"].get("tags", [])
    check = next("".join(c["source"]) for c in cells if ".from_parameters(globals())" in "".join(c["source"]))
    namespace = {}
    exec("".join(cells[0]["source"]), namespace)
    namespace.update(SMALL.get(notebook[:-6], {}), device="cpu", **overrides)
    tree = ast.parse(check)   # the cell's imports and its `settings = ...` line, nothing that does work
    tree.body = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                 or isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "settings"]
    exec(compile(tree, notebook, "exec"), namespace)


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_5_notebooks_refuse_what_the_library_refuses_before_any_work(notebook):
    run_checks(notebook)
    with pytest.raises(ValueError, match=r"top_k must be > 0 and <= 1, got 0"):
        run_checks(notebook, top_k=0)
    with pytest.raises(ValueError, match=r"lr_decay must be > 0 and <= 1, got 0"):
        run_checks(notebook, lr_decay=0.0)
    with pytest.raises(ValueError, match=r"lr must be > 0, got 0"):
        run_checks(notebook, lr=0.0)
    if "seeds" in SMALL.get(notebook[:-6], {}):   # papermill -p passes a list as text: read as a literal
        run_checks(notebook, seeds="[0]")
        with pytest.raises(ValueError, match=r"seeds must be a list of int, got 'zero'"):
            run_checks(notebook, seeds="zero")


# --- 6. the KL check --------------------------------------------------------------------------------------------
class Head(nn.Module):
    def __init__(self, activation):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 3)
        self.activation = activation

    def forward(self, x):
        return self.activation(self.lin(x))


def test_6_kl_refuses_near_probabilities_and_warns_for_sigmoid_and_relu_outputs():
    probabilities = l3d.GradientCollector(Head(lambda y: (y.softmax(-1) + 3e-3).clamp(max=1)), "lin.*", divergence="kl")
    with pytest.raises(ValueError, match=r"outputs are probabilities \(non-negative, each row sums to 1 within 0.01\)"):
        l3d.GradientSource(probabilities, torch.randn(16, 4), 4)
    for activation, looks in [(torch.sigmoid, r"all in \[0, 1\], like sigmoid outputs"),
                              (lambda y: torch.relu(y) + 1.5, r"all non-negative, like ReLU outputs")]:
        collector = l3d.GradientCollector(Head(activation), "lin.*", divergence="kl")
        with pytest.warns(UserWarning, match=rf"divergence='kl' takes logits, but the model's outputs are {looks}; "
                                             r"if they are not logits, use divergence='mse'"):
            l3d.GradientSource(collector, torch.randn(16, 4), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        l3d.GradientSource(l3d.GradientCollector(Head(lambda y: y), "lin.*", divergence="kl"), torch.randn(16, 4), 4)


# --- 7. Decomposition.load validates before allocating ------------------------------------------------------------
def test_7_load_compares_config_and_file_before_allocating(tmp_path, monkeypatch):
    l3d.Decomposition({"W": (4, 3), "b": (4,)}, 3, seed=0).save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["shapes"]["W"], config["rank"]["W"] = [4000, 3000], [400, 300]
    (tmp_path / "config.json").write_text(json.dumps(config))
    devices = []
    real_init = l3d.Tucker.__init__

    def spy(self, *args, **kw):
        real_init(self, *args, **kw)
        devices.append(self.core.device.type)

    monkeypatch.setattr(l3d.Tucker, "__init__", spy)
    with pytest.raises(ValueError, match=r"decomposition\.safetensors does not match .*config\.json: .*wrong shape"):
        l3d.Decomposition.load(tmp_path)
    assert devices and set(devices) == {"meta"}   # built for its shapes only, nothing allocated
    (tmp_path / "decomposition.safetensors").write_bytes(b"\xff" * 8 + b"{")
    with pytest.raises(ValueError, match=r"decomposition\.safetensors is damaged or not a safetensors file"):
        l3d.Decomposition.load(tmp_path)


def test_7_a_truncated_file_is_reported_as_damaged(tmp_path):
    l3d.Decomposition({"W": (4, 3), "b": (4,)}, 3, seed=0).save(tmp_path)
    data = (tmp_path / "decomposition.safetensors").read_bytes()
    (tmp_path / "decomposition.safetensors").write_bytes(data[:-4])
    with pytest.raises(ValueError, match=r"decomposition\.safetensors is damaged or not a safetensors file"):
        l3d.Decomposition.load(tmp_path)


def test_7_load_still_reads_what_save_wrote(tmp_path):
    decomposition = l3d.Decomposition({"W": (4, 3), "b": (4,)}, 3, rank=2, seed=0).double()
    decomposition.save(tmp_path)
    loaded = l3d.Decomposition.load(tmp_path)
    for (name, a), b in zip(decomposition.state_dict().items(), loaded.state_dict().values()):
        assert a.dtype == b.dtype == torch.float64 and torch.equal(a, b), name


# --- 11. types ------------------------------------------------------------------------------------------------------
def test_11_numpy_numbers_are_taken_and_bools_refused():
    shapes = {"W": (4, 3), "b": (4,)}
    a = l3d.Decomposition(shapes, np.int64(3), rank=np.int32(2), top_k=np.float32(0.5), seed=np.int64(0))
    b = l3d.Decomposition(shapes, 3, rank=2, top_k=0.5, seed=0)
    assert a.config == b.config and type(a.n_subnetworks) is int and type(a.top_k) is float
    assert (l3d.Decomposition(shapes, 3, rank={"W": (np.int64(2), 2), "b": np.int64(1)}).ranks
            == {"W": (2, 2), "b": (1,)})
    with pytest.raises(TypeError, match=r"n_subnetworks must be an int, got 5.0 \(float\)"):
        l3d.Decomposition(shapes, 5.0)
    with pytest.raises(TypeError,
                       match=r"rank must be an int, a tuple of ints \(one per mode\) or a dict name -> rank, got True"):
        l3d.Decomposition(shapes, 3, rank=True)
    with pytest.raises(TypeError, match=r"rank\['W'\] must be an int, a tuple of ints .* got 1.5"):
        l3d.Decomposition(shapes, 3, rank={"W": 1.5, "b": 1})
    with pytest.raises(TypeError, match=r"top_k must be a number, got '0.1' \(str\)"):
        l3d.Decomposition(shapes, 3, top_k="0.1")
    with pytest.raises(TypeError, match=r"top_k must be a number, got True \(bool\)"):
        l3d.Decomposition(shapes, 3, top_k=True)
    source = tms_source()
    decomposition = l3d.Decomposition(source.collector.shapes, 3, seed=0)
    history = l3d.fit(decomposition, source, np.int64(1), lr=np.float64(0.01), lr_decay_every=np.int32(1),
                      progress=False)
    assert len(history.reconstruction_error) == 1
    assert l3d.impact(decomposition, source.collector, source.inputs, n_ref=np.int64(1)).shape == (32, 3)


def test_11_dtypes_of_model_inputs_and_decomposition_are_checked_up_front():
    source = tms_source()
    with pytest.raises(ValueError,
                       match=r"inputs are torch.float64 but the model's decomposed tensors are \['torch.float32'\]"):
        l3d.GradientSource(source.collector, source.inputs.double(), 8)
    decomposition = l3d.Decomposition(source.collector.shapes, 3, seed=0).double()
    with pytest.raises(ValueError, match=r"the decomposition is torch.float64 "
                                         r"but the model's decomposed tensors are \['torch.float32'\]"):
        l3d.fit(decomposition, source, 1, progress=False)
    with pytest.raises(ValueError, match=r"the decomposition is torch.float64"):
        l3d.evaluate(decomposition, source)
    with pytest.raises(ValueError, match=r"the decomposition is torch.float64"):
        l3d.impact(decomposition, source.collector, source.inputs)
    tokens = torch.randint(0, 5, (16, 3))   # integer inputs (token ids) are not the model's dtype, and fine
    embedding = l3d.GradientCollector(nn.Sequential(nn.Embedding(5, 4), nn.Flatten(), nn.Linear(12, 2)), "2.weight")
    assert l3d.GradientSource(embedding, tokens, 4).inputs is tokens


# --- 12. small ones -------------------------------------------------------------------------------------------------
def test_12_atomic_writes_give_the_modes_of_open_and_mkdir(tmp_path):
    previous = os.umask(0o022)
    try:
        write_file(tmp_path / "a.txt", lambda f: open(f, "w").write("x"))
        write_folder(tmp_path / "folder", lambda d: (d / "b.txt").write_text("y"))
        l3d.checkpoint.save_checkpoint(tmp_path / "ckpt", 1, l3d.Decomposition({"W": (2, 2)}, 2), {"step": 1})
        os.umask(0o077)
        write_file(tmp_path / "private.txt", lambda f: open(f, "w").write("x"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
    folder = tmp_path / "ckpt" / "step-00000001"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o644}
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600


def test_12_keep_checkpoints_0_and_a_checkpoint_dir_that_is_a_file_are_refused(tmp_path):
    source = tms_source()
    decomposition = l3d.Decomposition(source.collector.shapes, 3, seed=0)
    with pytest.raises(ValueError, match=r"keep_checkpoints must be >= 1, got 0"):
        l3d.fit(decomposition, source, 1, progress=False, checkpoint_dir=tmp_path, keep_checkpoints=0)
    with pytest.raises(ValueError, match=r"keep must be an int >= 1"):
        l3d.checkpoint.save_checkpoint(tmp_path, 1, decomposition, {}, keep=0)
    (tmp_path / "file").write_text("")
    calls = []
    with pytest.raises(NotADirectoryError, match=r"checkpoint_dir '.*file' is a file"):
        l3d.fit(decomposition, source, 1, progress=False, checkpoint_dir=tmp_path / "file",
                callback=lambda step, parts: calls.append(step))
    assert calls == []   # refused before the first step


def test_12_command_line_arguments_are_checked_before_setup_runs(tmp_path, monkeypatch, capsys):
    import l3d.cli

    def setup(**kw):
        raise AssertionError("setup ran")

    monkeypatch.setattr(l3d.cli, "tms", setup)
    with pytest.raises(SystemExit) as e:
        l3d.cli.main(["--out", str(tmp_path), "--top-k", "0"])
    assert e.value.code == 2 and "--top-k must be > 0 and <= 1, got 0.0" in capsys.readouterr().err


class TupleModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        y = self.lin(x)
        return y, y.sum()


def test_12_a_model_returning_a_tuple_gets_a_hint_to_pass_forward():
    collector = l3d.GradientCollector(TupleModel(), "lin.*")
    hint = (r"returned tuple, not a tensor of outputs: pass forward= to pick the tensor, "
            r"e.g. forward=lambda m, x: m\(x\)\[0\]")
    with pytest.raises(TypeError, match=hint):
        l3d.GradientSource(collector, torch.randn(8, 4), 4)
    with pytest.raises(TypeError, match=hint):
        collector(torch.randn(8, 4), references=torch.randn(8, 3))
    picked = l3d.GradientCollector(TupleModel(), "lin.*", forward=lambda m, x: m(x)[0])
    assert picked(torch.randn(8, 4)).n_samples == 8
