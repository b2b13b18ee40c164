"""Joint gradients: several models of one form in one vectorized pass equal each model's own gradients (float32
sums in another order: within 1e-4 relative, 1e-6 absolute)."""
import itertools

import pytest
import torch

import l3d
from l3d.experiments.toys import circuit_superposition
from l3d.gradients import StackedGradients
from l3d.gradients.joint import JointPool, _joint, joinable, outer_plan


def collectors(n=3):
    torch.manual_seed(0)
    return [l3d.GradientCollector(circuit_superposition(6, 3, "authors"), "*", engine="dense") for _ in range(n)]


def test_one_pass_over_several_models_equals_each_models_own_gradients():
    cols = collectors()
    inputs = [torch.rand(20, 6, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    references = [c.references(x, torch.Generator().manual_seed(9)) for c, x in zip(cols, inputs)]
    pool = JointPool(cols)
    pending = [pool.request(c, x, r) for c, x, r in zip(cols, inputs, references)]
    assert [p.n_samples for p in pending] == [20] * 3 and pending[1][4:9].n_samples == 5
    for c, x, r, p in zip(cols, inputs, references, pending):
        own = c(x, r)
        torch.testing.assert_close(p.flat(), own.flat(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(p[4:9].flat(), own.flat()[4:9], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(p[4:9][1:3].sq_norms(), own.sq_norms()[5:7], rtol=1e-4, atol=1e-6)


def test_the_same_rows_of_one_pass_come_as_one_stack_without_a_copy():
    """What a sweep's step reads: every source's batch, the same rows of each chunk of one pass, as one
    StackedGradients viewing the pass's tensor; anything else (other rows, another order) None."""
    cols = collectors()
    inputs = [torch.rand(20, 6, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    references = [c.references(x, torch.Generator().manual_seed(9)) for c, x in zip(cols, inputs)]
    pool = JointPool(cols)
    pending = [pool.request(c, x, r) for c, x, r in zip(cols, inputs, references)]
    batches = [p[4:9] for p in pending]
    stacked = pool.stack(batches)
    assert isinstance(stacked, StackedGradients) and len(stacked) == 3 and stacked.n_samples == 5
    for group, batch in zip(stacked, batches):
        assert torch.equal(group.flat(), batch.flat()) and torch.equal(group.sq_norms(), batch.sq_norms())
    assert torch.equal(stacked.flat(), torch.stack([b.flat() for b in batches]))
    assert torch.equal(stacked.totals(), torch.stack([b.sq_norms().sum() for b in batches]))
    assert stacked.flat().untyped_storage().data_ptr() == pending[0].flat().untyped_storage().data_ptr()
    assert torch.equal(pool.stack(batches[1:]).flat(), stacked.flat()[1:])
    assert pool.stack([pending[0][4:9], pending[1][5:10], pending[2][4:9]]) is None
    assert pool.stack(batches[::-1]) is None
    assert pool.stack([p[torch.arange(4, 9)] for p in pending]) is None                 # rows by index: copies
    assert torch.equal(pool.stack(pending).flat(), torch.stack([p.flat() for p in pending]))   # whole chunks


def test_only_models_of_one_form_with_dense_gradients_share_a_pass():
    cols = collectors(2)
    assert joinable(cols)
    assert not joinable(cols[:1])
    torch.manual_seed(1)
    other = l3d.GradientCollector(circuit_superposition(6, 4, "authors"), "*", engine="dense")    # other shapes
    factored = l3d.GradientCollector(circuit_superposition(6, 3, "authors"), "*", engine="auto")
    assert not joinable([cols[0], other]) and not joinable([cols[0], factored])
    with pytest.raises(ValueError, match="cannot share a pass"):
        JointPool([cols[0], other])


class Mixed(torch.nn.Module):
    """nn.Linear layers of every kind `outer_plan` meets: called once (factored as outer products), called twice
    (left to autograd), applied on several positions per item (left), a raw parameter (left), a weight tied to a
    second use outside its module (left)."""

    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(4, 6)
        self.twice = torch.nn.Linear(6, 6)
        self.positions = torch.nn.Linear(3, 3, bias=False)
        self.tied = torch.nn.Linear(6, 4)
        self.scale = torch.nn.Parameter(torch.rand(4) + 0.5)

    def forward(self, x):
        h = torch.tanh(self.first(x))
        h = torch.tanh(self.twice(torch.tanh(self.twice(h))))
        h = self.positions(h.view(-1, 2, 3)).reshape(-1, 6)
        return self.scale * self.tied(h) + 0.1 * h @ self.tied.weight.T


def test_outer_products_are_autograds_per_sample_gradients():
    """Per model and sample: the pooled gradient against torch.autograd.grad of that sample's divergence (float64,
    rel 1e-10); the tensors written as outer products bit for bit what autograd's vmap gives."""
    torch.manual_seed(0)
    models = [Mixed().double() for _ in range(3)]
    cols = [l3d.GradientCollector(m, "*", engine="dense", divergence="mse") for m in models]
    inputs = [torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    references = [c.references(x, torch.Generator().manual_seed(9)) for c, x in zip(cols, inputs)]
    assert outer_plan(cols[0], inputs[0]) == {"first.weight": ("first", "weight"), "first.bias": ("first", "bias"),
                                              "tied.bias": ("tied", "bias")}
    pool = JointPool(cols)
    pending = [pool.request(c, x, r) for c, x, r in zip(cols, inputs, references)]
    for model, col, x, r, p in zip(models, cols, inputs, references, pending):
        got = p.dense().grads
        for i in range(x.shape[0]):
            loss = (model(x[i:i + 1])[0] - r[i]).pow(2).sum()
            want = torch.autograd.grad(loss, [col.params[n] for n in col.names])
            for n, w in zip(col.names, want):
                torch.testing.assert_close(got[n][i], w, rtol=1e-10, atol=1e-12)
    chunks = list(zip(cols, inputs, references))
    for outer, plain in zip(_joint(chunks), _joint(chunks, plan={})):
        assert torch.equal(outer.flat(), plain.flat())


class Tokens(torch.nn.Module):
    """Token ids in, an nn.Linear on their mean embedding out: the outer products' zero takes the weight's dtype."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(7, 4)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.embedding(x).mean(1))


def test_outer_products_of_a_model_that_reads_token_ids():
    torch.manual_seed(0)
    models = [Tokens() for _ in range(2)]
    cols = [l3d.GradientCollector(m, "*", engine="dense", divergence="mse") for m in models]
    inputs = [torch.randint(0, 7, (5, 3), generator=torch.Generator().manual_seed(s)) for s in range(2)]
    references = [c.references(x, torch.Generator().manual_seed(9)) for c, x in zip(cols, inputs)]
    assert set(outer_plan(cols[0], inputs[0])) == {"head.weight", "head.bias"}
    for col, x, r, got in zip(cols, inputs, references, _joint(list(zip(cols, inputs, references)))):
        torch.testing.assert_close(got.flat(), col(x, r).flat(), rtol=1e-5, atol=1e-7)


def test_squared_norms_by_blocks_of_rows_are_one_vecdot():
    """`row_sq_norms` works a block of rows at a time (to stay in the cache): bit for bit one vecdot over every row,
    for rows that cross block boundaries, in float32 and float64, on one and two threads (rows longer than a block:
    blocks of two rows, a lone last row joining the one before; torch sums a lone long row in parallel pieces)."""
    from l3d.gradients.dense import BLOCK, row_sq_norms
    cases = ((torch.float32, (3, 997, 445)), (torch.float64, (2, BLOCK // 7 + 3, 7)), (torch.float32, (5, 70001)),
             (torch.float32, (1, 70001)), (torch.float32, (6, BLOCK + 1)))
    threads = torch.get_num_threads()
    for (dtype, shape), n_threads in itertools.product(cases, (1, 2)):
        torch.set_num_threads(n_threads)
        flat = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 3
        got = row_sq_norms(flat)
        assert got.shape == shape[:-1]
        assert torch.equal(got, torch.linalg.vecdot(flat, flat))
        torch.testing.assert_close(got, flat.double().pow(2).sum(-1).to(dtype), rtol=1e-5, atol=0)
    torch.set_num_threads(threads)
