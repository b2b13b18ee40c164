"""Tucker contractions and the small-model loss against materialized tensors (float64)."""
import pytest
import torch

import l3d
from l3d.tucker import Tucker

pytestmark = pytest.mark.usefixtures("float64")   # every test of this file in float64 (tests/conftest.py)

SHAPES = [((7,), (3,)), ((6, 5), (2, 3)), ((4, 3, 2, 2), (2, 2, 1, 2))]


@pytest.mark.parametrize("via_full", [True, False])
@pytest.mark.parametrize("shape,ranks", SHAPES)
def test_inner_norms_and_half_match_full_tensors(shape, ranks, via_full, monkeypatch):
    torch.manual_seed(0)
    a, b = Tucker(4, shape, ranks), Tucker(3, shape, ranks)
    monkeypatch.setattr(Tucker, "full_is_cheaper", lambda self, n: via_full)
    A, B = a.full().flatten(1), b.full().flatten(1)
    torch.testing.assert_close(a.inner(b), A @ B.T)
    torch.testing.assert_close(a.sq_norms(), A.pow(2).sum(1))
    # full = first factor times half
    torch.testing.assert_close(torch.bmm(a.factors[0], a.half()).flatten(1), A)
    # full itself against successive mode products
    ref = a.core
    for m, u in enumerate(a.factors):
        ref = torch.movedim(torch.einsum("k...r,kir->k...i", torch.movedim(ref, m + 1, -1), u), -1, m + 1)
    torch.testing.assert_close(a.full(), ref)


def test_small_model_loss_gradients_match_autograd():
    """The hand-written backward of the ≤2-mode dense loss against autograd through the generic path."""
    torch.manual_seed(1)
    shapes = {"w": (4, 3), "b": (4,), "v": (2, 5)}
    dec = l3d.Decomposition(shapes, 6, rank={"w": (2, 2), "b": 2, "v": 1}, top_k=0.3, seed=0).double()
    grads = l3d.DenseGradients({n: torch.randn(12, *s) for n, s in shapes.items()})
    for top_k in (None, 1.0):
        fast = dec.loss(grads, top_k)
        fast.loss.backward()
        want = [p.grad.clone() for p in dec.parameters()]
        dec.zero_grad()
        # the generic path: projections, decoder Gram from the factors, autograd
        c, p = dec.encode(grads), grads.project(dec.decoder)
        ct = c * l3d.batch_top_k(c, dec.top_k if top_k is None else top_k)
        total = grads.sq_norms().sum()
        loss = (total - 2 * (ct * p).sum() + ((ct @ dec.decoder_gram()) * ct).sum()) / total
        loss.backward()
        torch.testing.assert_close(fast.loss, loss)
        for a, b in zip(want, [p.grad for p in dec.parameters()]):
            torch.testing.assert_close(a, b)
        dec.zero_grad()


def test_normalize_decoder_gives_unit_norms():
    torch.manual_seed(2)
    for shapes in ({"w": (4, 3), "b": (4,)}, {"k": (3, 2, 2, 2), "b": (3,)}):
        dec = l3d.Decomposition(shapes, 5, rank=2, seed=0).double()
        with torch.no_grad():
            for t in dec.decoder:
                t.core.mul_(torch.rand_like(t.core) * 3)
        dec.normalize_decoder_()
        norms = sum(d.flatten(1).pow(2).sum(1) for d in dec.decoder_directions().values())
        torch.testing.assert_close(norms, torch.ones(5))


def test_batch_top_k_keeps_the_largest():
    c = torch.tensor([[0.1, -3.0, 0.2], [2.0, 0.0, -0.5]])
    assert l3d.batch_top_k(c, 0.34).tolist() == [[False, True, False], [True, False, False]]
    assert l3d.batch_top_k(c, 1.0).all()
    with pytest.raises(ValueError, match="top_k"):
        l3d.batch_top_k(c, 0)
