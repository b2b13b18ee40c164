"""GradientSource's chunk_size: any size works; one that is not a multiple of the batch is rounded down to one."""
import pytest
import torch

import l3d
from l3d.toys import TMS, sparse_features


def source(n, batch_size, chunk_size):
    torch.manual_seed(0)
    inputs = sparse_features(n, 5, generator=torch.Generator().manual_seed(0))
    collector = l3d.GradientCollector(TMS().untied(), "*")
    return l3d.GradientSource(collector, inputs, batch_size, chunk_size=chunk_size, seed=0)


def test_the_readme_s_chunk_size_len_inputs_works_for_any_data_size():
    whole = source(1000, 32, 1000)                   # 1000 is no multiple of 32: rounded down to 992
    assert whole.chunk_size == 992 and len(whole) == 31
    batches = list(whole)
    assert len(batches) == 31 and {b.n_samples for b in batches} == {32}
    exact = source(1000, 32, 992)                    # the same epoch as a chunk_size the old check accepted
    assert all(torch.equal(a.dense().flat(), b.dense().flat()) for a, b in zip(batches, exact, strict=True))


@pytest.mark.parametrize("chunk_size, expected", [(100, 96), (31, 32), (5000, 4992), (None, 32)])
def test_chunk_size_rounds_down_to_whole_batches_and_an_epoch_keeps_every_whole_batch(chunk_size, expected):
    s = source(1000, 32, chunk_size)
    assert s.chunk_size == expected
    assert [b.n_samples for b in s] == [32] * 31     # the last 1000 % 32 = 8 items of the shuffle sit out


@pytest.mark.parametrize("chunk_size", [0, -32, 2.5, True])
def test_chunk_size_must_be_a_positive_int(chunk_size):
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        source(100, 10, chunk_size)
