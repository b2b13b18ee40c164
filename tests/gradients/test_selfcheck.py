"""The collector's self-check: models that break the factored engine's assumptions get autograd's gradients.

Every gradient here is compared with an explicit loop, one torch.autograd.grad per sample (`explicit_grads`).
"""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import l3d
from l3d.divergences import divergence
from l3d.gradients import selfcheck
from l3d.gradients.factored import factorable


def explicit_grads(model, names, inputs, refs, kind, sequence=False, forward=None):
    """name -> (samples, *shape) from one autograd call per sample (per position for sequences), in eval mode."""
    forward = forward or (lambda m, x: m(x))
    params = dict(model.named_parameters())
    out = {n: [] for n in names}
    refs = refs.view(inputs.shape[0], -1, refs.shape[-1]) if sequence else refs
    for x, r in zip(inputs, refs):
        d = divergence(forward(model, x.unsqueeze(0)).squeeze(0), r, kind)
        for t in range(d.numel()) if sequence else [None]:
            gs = torch.autograd.grad(d[t] if sequence else d, [params[n] for n in names], retain_graph=True,
                                     allow_unused=True)
            for n, g in zip(names, gs):
                out[n].append(torch.zeros_like(params[n]) if g is None else g)
    return {n: torch.stack(v) for n, v in out.items()}


def gradients_and_explicit(col, inputs, seed=1):
    refs = col.references(inputs, torch.Generator().manual_seed(seed))
    got = col(inputs, references=refs).dense().grads
    model = col.model.eval()
    return got, explicit_grads(model, col.names, inputs, refs, col.divergence, col.sequence, col.forward)


def assert_close(got, want, rtol, atol):
    assert set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=rtol, atol=atol, msg=lambda m, n=n: f"{n}: {m}")


def collector_warnings(record):
    return [str(w.message) for w in record if "GradientCollector" in str(w.message)]


# --- the two cases ------------------------------------------------------------------------------
def doubled_first_layer():
    """The issue's case 1: a forward hook that doubles a Linear's output (the engine gave ||g||² a quarter)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    m[0].register_forward_hook(lambda mod, args, out: out * 2)
    return m


@pytest.mark.parametrize("engine", ["auto", "factored"])
def test_a_forward_hook_that_changes_a_linear_output_gives_autograd_gradients(engine):
    """The engine perturbs the raw output before any module hook, so the hook's factor 2 is in δ: still
    factored, no warning, autograd's gradients (float32: within 1e-5 relative)."""
    model = doubled_first_layer()
    col = l3d.GradientCollector(model, "*", engine=engine)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got, want = gradients_and_explicit(col, torch.randn(9, 3))
    assert collector_warnings(record) == []
    assert set(col.plan) == set(col.names)
    assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert max(col.self_check_errors.values()) < 1e-5


class TiedAutoencoder(nn.Module):
    """The issue's case 2: the encoder's weight is the decoder too, used outside enc's forward (off by up to 83 %)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(5, 3)

    def forward(self, x):
        return F.linear(torch.relu(self.enc(x)), self.enc.weight.t())


def test_a_tied_decoder_is_computed_densely_with_a_warning_naming_it():
    torch.manual_seed(1)
    col = l3d.GradientCollector(TiedAutoencoder(), "*")
    with pytest.warns(UserWarning, match=r"'enc\.weight' is computed densely .* outside the forward of module 'enc' "
                                         r"\(by torch operation 't'"):
        got, want = gradients_and_explicit(col, torch.randn(9, 5))
    assert set(col.plan) == {"enc.bias"}                  # the bias is only used in enc's forward: still factored
    assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_tied_decoder_is_refused_by_the_factored_engine():
    col = l3d.GradientCollector(TiedAutoencoder(), "*", engine="factored")
    with pytest.raises(ValueError, match=r"engine='factored' cannot factor \['enc\.weight'\].*outside the forward"):
        col(torch.randn(6, 5))


def test_the_self_check_finds_a_tied_decoder_without_the_up_front_detection(monkeypatch):
    """With the detection switched off, the comparison with autograd alone catches the tied weight."""
    from contextlib import contextmanager

    @contextmanager
    def sees_nothing(model, plan, params):
        yield {}

    monkeypatch.setattr(l3d.gradients.discovery, "used_outside", sees_nothing)
    torch.manual_seed(1)
    col = l3d.GradientCollector(TiedAutoencoder(), "*")
    with pytest.warns(UserWarning, match=r"'enc\.weight' is computed densely .* differ from autograd's by 0\.\d+ "
                                         r"\(relative, on 4 samples; tolerance 0\.00035 for torch\.float32\)"):
        got, want = gradients_and_explicit(col, torch.randn(9, 5))
    assert set(col.plan) == {"enc.bias"}
    assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"cannot factor \['enc\.weight'\].*differ from autograd's"):
        l3d.GradientCollector(TiedAutoencoder(), "*", engine="factored")(torch.randn(6, 5))


@pytest.fixture
def doubling_global_hook():
    """A global forward hook (run before the engine's) that doubles every Linear's output."""
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda mod, args, out: out * 2 if isinstance(mod, nn.Linear) else None)
    yield
    handle.remove()


def test_a_global_hook_that_changes_outputs_is_caught_by_the_self_check(doubling_global_hook):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    col = l3d.GradientCollector(model, ["0.weight", "2.*"])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got, want = gradients_and_explicit(col, torch.randn(9, 3))
    said = collector_warnings(record)
    assert len(said) == 3 and col.plan == {}
    for name, message in zip(["0.weight", "2.weight", "2.bias"], said):
        assert f"{name!r} is computed densely" in message and "global forward hooks" in message
    assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"cannot factor \['0\.weight', '2\.weight', '2\.bias'\]"):
        l3d.GradientCollector(model, ["0.weight", "2.*"], engine="factored")(torch.randn(6, 3))


class Bag(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.out = nn.Linear(6, 11)

    def forward(self, x):
        return self.out(torch.tanh(self.emb(x).cumsum(1)))


def doubled_head():
    torch.manual_seed(3)
    model = Bag().double()
    model.out.register_forward_hook(lambda mod, args, out: out * 2)
    return model


def test_a_hook_that_changes_the_output_head_keeps_the_head_in_the_backward():
    """The position-wise head shortcut needs output = head(h); a hook that doubles the head's output voids it."""
    col = l3d.GradientCollector(doubled_head(), "emb.weight", divergence="kl", sequence=True)
    tokens = torch.randint(0, 11, (4, 5))
    got, want = gradients_and_explicit(col, tokens)
    assert col._head(tokens) is None
    assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_the_self_check_turns_off_a_wrong_head_shortcut(monkeypatch):
    """With the up-front head test fooled (any Linear whose output is returned counts), the self-check finds the
    tensors' disagreement and backpropagates through the head at every position instead (the embedding, factored
    with "auto", stays factored)."""
    monkeypatch.setattr(l3d.gradients.discovery, "is_head", lambda model, name, calls, out: calls[-1][1] is out)
    for engine in ("dense", "auto"):
        col = l3d.GradientCollector(doubled_head(), "emb.weight", divergence="kl", sequence=True, engine=engine)
        planned = dict(col.plan)
        tokens = torch.randint(0, 11, (4, 5))
        with pytest.warns(UserWarning, match=r"through the output head's shortcut differ from autograd's by 0\.\d+ "
                                             r"\(relative, on 4 samples; tolerance 1\.5e-08 for torch\.float64\)"):
            got, want = gradients_and_explicit(col, tokens)
        assert not col.cut_head and col._head(tokens) is None and col.plan == planned
        assert_close(got, want, rtol=1e-9, atol=1e-12)


# --- what the self-check lets through silently ----------------------------------------------------------------
class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.lin(torch.tanh(self.lin(x)))))


class CausalBag(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6, padding_idx=0)
        self.norm = nn.LayerNorm(6)
        self.out = nn.Linear(6, 11)

    def forward(self, x):
        return self.out(self.norm(self.emb(x).cumsum(1)))


def hooked_mlp():
    """A recording forward hook and a pre-hook that scales the input: both agree with autograd."""
    m = nn.Sequential(nn.Linear(3, 5), nn.ReLU(inplace=True), nn.Linear(5, 2))
    seen = []
    m[0].register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    m[2].register_forward_pre_hook(lambda mod, args: (3 * args[0],))
    return m


def story_gpt_neo():
    from transformers import GPTNeoForCausalLM

    from l3d.experiments.transformer import story_config

    return GPTNeoForCausalLM(story_config(vocab_size=13, width=8, n_layers=2, n_heads=2, length=8)).eval()


NORMAL = {
    # name: (model, tensors, inputs, kwargs)
    "linear, in-place relu": (lambda: nn.Sequential(nn.Linear(3, 5), nn.ReLU(inplace=True), nn.Linear(5, 2)), "*",
                              lambda: torch.randn(7, 3), {}),
    "conv stride dilation groups": (
        lambda: nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, groups=2),
                              nn.ReLU(), nn.Flatten(), nn.Unflatten(1, (4, 9)), nn.Conv1d(4, 3, 2, dilation=2),
                              nn.Flatten(), nn.Linear(21, 3)),
        ["0.*", "2.*", "6.*"], lambda: torch.randn(5, 2, 7, 7), {"divergence": "kl"}),
    "linear called twice": (Twice, "*", lambda: torch.randn(6, 4), {}),
    "embedding padding_idx, layernorm": (CausalBag, "*", lambda: torch.randint(0, 11, (4, 5)),
                                         {"divergence": "kl", "sequence": True}),
    "hooks that agree": (hooked_mlp, "*", lambda: torch.randn(7, 3), {}),
    "gpt-neo (story config)": (story_gpt_neo, ["transformer.h.1.attn.attention.*", "transformer.h.1.ln_1.*",
                                               "transformer.h.0.mlp.c_fc.weight", "transformer.wpe.weight"],
                               lambda: torch.randint(0, 13, (3, 6)),
                               {"divergence": "kl", "sequence": True, "forward": lambda m, x: m(x).logits}),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(NORMAL))
def test_the_self_check_passes_silently_on_modules_the_engine_knows(case, dtype):
    build, tensors, inputs, kwargs = NORMAL[case]
    torch.manual_seed(4)
    model = build().to(dtype)
    x = inputs()
    x = x.to(dtype) if x.is_floating_point() else x
    col = l3d.GradientCollector(model, tensors, **kwargs)
    planned = dict(col.plan)
    assert planned == factorable(model, col.params) and planned
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got, want = gradients_and_explicit(col, x)
    assert collector_warnings(record) == []
    assert col.plan == planned                                  # nothing fell back
    rtol = selfcheck.tolerance(dtype, torch.device("cpu"))
    assert set(col.self_check_errors) == set(col.names) and max(col.self_check_errors.values()) <= rtol
    tol = {torch.float32: (1e-4, 1e-6), torch.float64: (1e-9, 1e-12)}[dtype]
    assert_close(got, want, *tol)


# --- tensors that do not affect the output ----------------------------------------------------------------------
class Idle(nn.Module):
    """`muted` is called but its output is multiplied by 0; `spare` is never called; `lin` does the work."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.muted = nn.Linear(3, 2)
        self.spare = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x) + 0 * self.muted(x)


def test_tensors_that_do_not_affect_the_output_are_named():
    torch.manual_seed(5)
    col = l3d.GradientCollector(Idle(), "*")
    with pytest.warns(UserWarning, match=r"the per-sample gradients of \['muted\.weight', 'muted\.bias', "
                                         r"'spare\.weight', 'spare\.bias'\] are identically zero") as record:
        grads = col(torch.randn(8, 3)).dense().grads
    assert not any("'lin." in str(w.message) for w in record)
    assert grads["lin.weight"].abs().sum() > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        col(torch.randn(8, 3))                                   # said once, on the first call


def test_zero_gradients_on_the_probe_alone_are_not_reported():
    """The probe's 4 items are all-zero inputs (lin.weight's gradient is 0 there), the other items are not: only
    the tensor that is zero everywhere is named."""
    torch.manual_seed(6)

    class Spare(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2, bias=False)
            self.spare = nn.Linear(3, 2, bias=False)

        def forward(self, x):
            return self.lin(x)

    inputs = torch.cat([torch.zeros(4, 3), torch.randn(6, 3)])
    col = l3d.GradientCollector(Spare(), "*")
    with pytest.warns(UserWarning, match=r"the per-sample gradients of \['spare\.weight'\] are") as record:
        grads = col(inputs).dense().grads
    assert len(collector_warnings(record)) == 1
    assert grads["lin.weight"][:4].abs().sum() == 0 and grads["lin.weight"][4:].abs().sum() > 0


# --- dtypes ---------------------------------------------------------------------------------------------------
def test_float64_model_with_float32_default_dtype():
    """A float64 model (the default dtype left float32): factored, dense and autograd agree to 1e-12."""
    torch.manual_seed(7)
    model = CausalBag().double()
    tokens = torch.randint(0, 11, (3, 5))
    cols = {e: l3d.GradientCollector(model, "*", divergence="kl", sequence=True, engine=e) for e in ("auto", "dense")}
    refs = cols["auto"].references(tokens, torch.Generator().manual_seed(0))
    assert refs.dtype == torch.float64
    fast, dense = (cols[e](tokens, references=refs).dense().grads for e in ("auto", "dense"))
    want = explicit_grads(model, cols["auto"].names, tokens, refs, "kl", sequence=True)
    assert_close(fast, want, rtol=1e-12, atol=1e-14)
    assert_close(dense, want, rtol=1e-12, atol=1e-14)
    assert max(cols["auto"].self_check_errors.values()) < 1e-13


def test_bfloat16_model_runs_and_passes_its_self_check():
    """bfloat16: factored, no false alarm from the self-check (√ε = 0.088), within 5 % of float64 autograd."""
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 4))
    x = torch.randn(8, 6)
    col = l3d.GradientCollector(model.bfloat16(), "*")
    refs = col.references(x.bfloat16(), torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = col(x.bfloat16(), references=refs).dense().grads
    assert collector_warnings(record) == [] and set(col.plan) == set(col.names)
    assert max(col.self_check_errors.values()) <= selfcheck.tolerance(torch.bfloat16, torch.device("cpu"))
    want = explicit_grads(model.double(), col.names, x.double(), refs.double(), "mse")
    for n in col.names:
        assert got[n].dtype == torch.bfloat16
        error = (got[n].double() - want[n]).norm() / want[n].norm()
        assert error < 0.05, (n, error)


# --- the up-front detection ------------------------------------------------------------------------------------
def test_used_outside_finds_uses_that_pass_a_gradient_only():
    class Uses(nn.Module):
        def __init__(self, use):
            super().__init__()
            self.enc = nn.Linear(3, 3)
            self.use = use

        def forward(self, x):
            return self.use(self, self.enc(x))

    cases = {
        "t": lambda m, h: F.linear(h, m.enc.weight.t()),
        "mul": lambda m, h: h * m.enc.bias,
        None: lambda m, h: h,
        "detached": lambda m, h: h + m.enc.weight.detach().sum(),
        "no_grad": lambda m, h: h + _no_grad_sum(m.enc.weight),
        "metadata": lambda m, h: h.to(m.enc.weight.dtype) * m.enc.weight.shape[0],
    }
    for expect, use in cases.items():
        model = Uses(use)
        params = dict(model.named_parameters())
        with selfcheck.used_outside(model, factorable(model, params), params) as found, torch.enable_grad():
            model(torch.randn(1, 3))
        want = {"t": {"enc.weight": "t"}, "mul": {"enc.bias": "mul"}}.get(expect, {})
        assert found == want, expect
        assert not model.enc._forward_hooks and not model.enc._forward_pre_hooks   # its hooks are removed


def _no_grad_sum(w):
    with torch.no_grad():
        return w.sum()


def test_a_forward_replaced_on_the_instance_is_not_factored():
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    lin = model[0]
    lin.forward = lambda x: 2 * F.linear(x, lin.weight, lin.bias)
    col = l3d.GradientCollector(model, "*")
    assert set(col.plan) == {"2.weight", "2.bias"}
    got, want = gradients_and_explicit(col, torch.randn(7, 3))
    assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_tolerance_is_half_the_digits_of_the_arithmetic():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert selfcheck.tolerance(torch.float64, cpu) == pytest.approx(torch.finfo(torch.float64).eps ** 0.5)
    assert selfcheck.tolerance(torch.float32, cpu) == pytest.approx(3.45e-4, rel=1e-2)
    assert selfcheck.tolerance(torch.float32, cuda) == pytest.approx(2 ** -5)          # TF32
    assert selfcheck.tolerance(torch.bfloat16, cpu) == pytest.approx(2 ** -3.5)


def test_a_model_that_keeps_state_between_calls_is_refused():
    """Its output scales with a call counter: vmap's gradients cannot match autograd's one sample at a time."""

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return self.lin(x) * self.calls

    for engine in ("dense", "auto"):
        with pytest.raises(ValueError, match=r"\['lin\.bias', 'lin\.weight'\], computed vectorized \(vmap of grad\), "
                                             r"differ from autograd's .* keep no state between calls"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")       # "auto" first tries the dense path, with a warning
                l3d.GradientCollector(Counting(), "*", engine=engine)(torch.randn(6, 3))
