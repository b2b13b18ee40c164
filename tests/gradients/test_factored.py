"""The factored gradient engine agrees with explicit per-sample autograd gradients (float64, CPU)."""
import pytest
import torch
from torch import nn

import l3d
from l3d.divergences import divergence

pytestmark = pytest.mark.usefixtures("float64")   # every test of this file in float64 (tests/conftest.py)


def explicit_grads(model, names, inputs, refs, kind, sequence=False, forward=None):
    """name -> (samples, *shape) from one autograd call per sample (per position for sequences)."""
    forward = forward or (lambda m, x: m(x))
    params = dict(model.named_parameters())
    out = {n: [] for n in names}
    refs = refs.view(inputs.shape[0], -1, refs.shape[-1]) if sequence else refs
    for x, r in zip(inputs, refs):
        y = forward(model, x.unsqueeze(0)).squeeze(0)
        d = divergence(y, r, kind)
        for t in range(d.numel()) if sequence else [None]:
            target = d[t] if sequence else d
            gs = torch.autograd.grad(target, [params[n] for n in names], retain_graph=True, allow_unused=True)
            for n, g in zip(names, gs):
                out[n].append(torch.zeros_like(params[n]) if g is None else g)
    return {n: torch.stack(v) for n, v in out.items()}


def check(collector, inputs, expect_factored, n_subnetworks=4, rank=2, generator_seed=0):
    """Factored gradients, projections, norms and the loss against the explicit computation."""
    gen = torch.Generator().manual_seed(generator_seed)
    refs = collector.references(inputs, gen)
    grads = collector(inputs, references=refs)
    assert isinstance(grads, l3d.gradients.FactoredGradients)
    kinds = {n: type(p).__name__ for n, p in grads.parts.items()}
    assert {n for n, k in kinds.items() if k == "OuterPart" or n in collector.plan} == set(expect_factored), kinds
    names = collector.names
    expected = explicit_grads(collector.model, names, inputs, refs, collector.divergence,
                              collector.sequence, collector.forward)
    dense = grads.dense().grads
    for n in names:
        torch.testing.assert_close(dense[n], expected[n], rtol=1e-5, atol=1e-10, msg=f"gradient of {n}")

    dec = l3d.Decomposition(collector.shapes, n_subnetworks, rank=rank, top_k=0.3, seed=1).double()
    g = torch.cat([expected[n].flatten(1) for n in names], 1)                 # (N, n_w)
    E = torch.cat([d.flatten(1) for d in dec.encoder_directions().values()], 1)
    D = torch.cat([d.flatten(1) for d in dec.decoder_directions().values()], 1)
    torch.testing.assert_close(grads.project(dec.encoder), g @ E.T, rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(grads.project(dec.decoder), g @ D.T, rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(grads.sq_norms(), g.pow(2).sum(1), rtol=1e-5, atol=1e-10)

    c = g @ E.T
    mask = l3d.batch_top_k(c, 0.3)
    g_hat = (c * mask) @ D                                                    # materialized reconstruction
    want = (g - g_hat).pow(2).sum() / g.pow(2).sum()
    parts = dec.loss(grads)
    torch.testing.assert_close(parts.loss, want, rtol=1e-5, atol=1e-12)
    assert torch.equal(parts.mask, mask)
    # gradients w.r.t. the Tucker parameters agree with the dense engine's
    parts.loss.backward()
    fast = [p.grad.clone() for p in dec.parameters()]
    dec.zero_grad()
    dec.loss(l3d.DenseGradients(expected)).loss.backward()
    for a, b in zip(fast, [p.grad for p in dec.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-10)
    return grads, g


def test_linear_and_layernorm_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Tanh(), nn.Linear(7, 3))
    col = l3d.GradientCollector(model, "*", divergence="mse", gradient_chunk_size=4)
    check(col, torch.randn(9, 5), expect_factored=col.names)


def test_linear_over_positions_and_repeated_calls():
    """A Linear applied at several positions and twice per forward: its gradient sums over all of them."""
    torch.manual_seed(1)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.head = nn.Linear(4, 3)

        def forward(self, x):                      # x: (B, positions, 4)
            return self.head(torch.tanh(self.lin(torch.tanh(self.lin(x)))).mean(1))

    col = l3d.GradientCollector(Twice(), "*", divergence="kl")
    check(col, torch.randn(6, 5, 4), expect_factored=col.names)


def test_conv_layers():
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, groups=2), nn.ReLU(),
        nn.Flatten(), nn.Unflatten(1, (4, 9)),
        nn.Conv1d(4, 3, 2, dilation=2), nn.Flatten(), nn.Linear(21, 3),
    )
    col = l3d.GradientCollector(model, ["0.*", "2.*", "6.*"], divergence="kl")
    check(col, torch.randn(5, 2, 7, 7), expect_factored=col.names)


class CausalBag(nn.Module):
    """Token embeddings, causal running sum, layer norm, linear readout: every position a sample."""

    def __init__(self, vocab=11, dim=6):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab)

    def forward(self, x):
        return self.out(self.norm(self.emb(x).cumsum(1)))


def test_sequence_embedding_layernorm_linear():
    torch.manual_seed(3)
    col = l3d.GradientCollector(CausalBag(), "*", divergence="kl", sequence=True, gradient_chunk_size=3)
    tokens = torch.randint(0, 11, (4, 5))
    grads, g = check(col, tokens, expect_factored=col.names)
    # subsets: aligned with items, and arbitrary samples
    for index in (slice(5, 15), slice(3, 12), torch.tensor([0, 7, 7, 19, 2])):
        sub = grads[index]
        assert sub.n_samples == g[index].shape[0]
        torch.testing.assert_close(sub.sq_norms(), g[index].pow(2).sum(1), rtol=1e-5, atol=1e-10)
        dec = l3d.Decomposition(col.shapes, 3, rank=2, seed=4).double()
        E = torch.cat([d.flatten(1) for d in dec.encoder_directions().values()], 1)
        torch.testing.assert_close(sub.project(dec.encoder), g[index] @ E.T, rtol=1e-5, atol=1e-10)


def tiny_gpt_neo():
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    config = GPTNeoConfig(
        vocab_size=23, hidden_size=8, num_layers=2, num_heads=2, max_position_embeddings=16,
        attention_types=[[["global", "local"], 1]], window_size=3, intermediate_size=12,
        attn_implementation="eager", bos_token_id=0, eos_token_id=0,
    )
    torch.manual_seed(5)
    return GPTNeoForCausalLM(config).double().eval()


def test_gpt_neo_attention_layernorm_embeddings_with_tied_fallback():
    model = tiny_gpt_neo()
    tensors = ["transformer.h.1.attn.attention.*", "transformer.h.1.ln_1.*", "transformer.wpe.weight",
               "transformer.wte.weight"]   # wte is tied to lm_head: dense fallback
    col = l3d.GradientCollector(model, tensors, divergence="kl", sequence=True,
                                forward=lambda m, x: m(x).logits)
    assert "transformer.wte.weight" not in col.plan
    factored = [n for n in col.names if n != "transformer.wte.weight"]
    tokens = torch.randint(0, 23, (3, 6))
    check(col, tokens, expect_factored=factored, n_subnetworks=5, rank=3)


class RawMatmul(nn.Module):
    """A parameter the engine does not know (used through torch.matmul), next to a Linear."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 5) / 2)
        self.lin = nn.Linear(5, 3)

    def forward(self, x):
        return self.lin(torch.tanh(torch.matmul(x, self.w)))


def test_unknown_module_falls_back_to_dense_and_mixes():
    torch.manual_seed(6)
    model = RawMatmul()
    col = l3d.GradientCollector(model, "*", divergence="mse")
    assert set(col.plan) == {"lin.weight", "lin.bias"}
    check(col, torch.randn(7, 4), expect_factored=["lin.weight", "lin.bias"])
    with pytest.raises(ValueError, match="cannot factor"):
        l3d.GradientCollector(model, "*", engine="factored")
    dense = l3d.GradientCollector(model, "*", engine="dense")
    assert isinstance(dense(torch.randn(3, 4)), l3d.DenseGradients)


def test_modules_that_change_forward_or_share_weights_are_not_factored():
    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    lin = nn.Linear(3, 3)
    model = nn.Sequential(Scaled(3, 3), lin, nn.Linear(3, 3))
    model[2].weight = lin.weight
    col = l3d.GradientCollector(model, "*")
    assert set(col.plan) == {"1.bias", "2.bias"}
    torch.manual_seed(7)
    check(col, torch.randn(6, 3), expect_factored=["1.bias", "2.bias"])


@pytest.mark.parametrize("engine", ["auto", "dense"])
def test_gpt_neo_backpropagates_once_through_the_output_head(engine):
    """With the unembedding not chosen, per-position gradients start at its input (one product per batch)."""
    model = tiny_gpt_neo()
    col = l3d.GradientCollector(model, ["transformer.h.0.attn.attention.*", "transformer.h.0.mlp.c_fc.weight"],
                                divergence="kl", sequence=True, forward=lambda m, x: m(x).logits, engine=engine)
    tokens = torch.randint(0, 23, (3, 5))
    assert col._head(tokens) is model.lm_head
    refs = col.references(tokens, torch.Generator().manual_seed(1))
    grads = col(tokens, references=refs).dense().grads
    expected = explicit_grads(model, col.names, tokens, refs, "kl", True, col.forward)
    for n in col.names:
        torch.testing.assert_close(grads[n], expected[n], rtol=1e-5, atol=1e-10, msg=f"gradient of {n}")


def test_recomputed_projections_and_gram_give_the_same_gradients(monkeypatch):
    """Big parts and decoder Grams are recomputed in backward (checkpointed): same loss, same gradients."""
    torch.manual_seed(8)
    col = l3d.GradientCollector(CausalBag(), "*", divergence="kl", sequence=True)
    grads = col(torch.randint(0, 11, (3, 4)))
    dec = l3d.Decomposition(col.shapes, 4, rank=2, top_k=0.3, seed=2).double()

    def loss_and_grads():
        dec.zero_grad()
        loss = dec.loss(grads).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in dec.parameters()]

    loss, want = loss_and_grads()
    for module in (l3d.gradients.factored, l3d.tucker, l3d.decomposition):
        monkeypatch.setattr(module, "KEEP_FOR_BACKWARD", 0, raising=False)
    monkeypatch.setattr(l3d.gradients.factored, "ALWAYS_KEEP", 0)
    monkeypatch.setattr(l3d.tucker, "ALWAYS_KEEP", 0)
    monkeypatch.setattr(l3d.tucker.Tucker, "full_is_cheaper", lambda self, n: True)
    loss2, got = loss_and_grads()
    torch.testing.assert_close(loss2, loss)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


class SelfAttention(nn.Module):
    """nn.MultiheadAttention uses out_proj's weight without calling out_proj: it must go to the dense path."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=False)[0])


def test_weights_used_outside_their_module_go_dense():
    torch.manual_seed(9)
    model = SelfAttention().eval()
    tokens = torch.randn(3, 5, 4)
    col = l3d.GradientCollector(model, ["attn.out_proj.weight", "head.weight"], divergence="kl", sequence=True)
    assert set(col.plan) == {"attn.out_proj.weight", "head.weight"}
    check(col, tokens, expect_factored=["head.weight"])
    assert set(col.plan) == {"head.weight"}
    strict = l3d.GradientCollector(model, ["attn.out_proj.weight"], divergence="kl", sequence=True, engine="factored")
    with pytest.raises(ValueError, match="never called"):
        strict(tokens)
