"""Data-parallel training over 2 CPU processes (gloo) equals one process on the same global batch."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

import l3d
from l3d.experiments.toys import TMS, sparse_features
from l3d.refit import refit_
from l3d.runtime.distributed import Shard

BATCH = 16  # global batch: 8 items per process with 2 processes


def _setup():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = TMS().untied().double()
    inputs = sparse_features(96, 5, generator=torch.Generator().manual_seed(1)).double()
    collector = l3d.GradientCollector(model, ["W_in", "W_out", "b"])
    decomposition = l3d.Decomposition(collector.shapes, 5, 1, top_k=0.1, seed=0).double()
    return collector, inputs, decomposition


def _train(checkpoint_dir=None, resample_every=0):
    collector, inputs, decomposition = _setup()
    source = l3d.GradientSource(collector, inputs, BATCH, chunk_size=2 * BATCH, seed=2)
    history = l3d.fit(decomposition, source, 4, lr=0.01, lr_decay_every=2, progress=False,
                      checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_dir and 5,
                      resample_every=resample_every)
    return decomposition, history, source


def _worker(rank: int, port: int, out: str, resample_every: int = 0, refit: bool = False) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        decomposition, history, source = _train(os.path.join(out, f"checkpoints{rank}"), resample_every)
        if refit:
            done = refit_(decomposition, source, min_share=0.3)
            torch.save(done.to_dict(), os.path.join(out, f"refit{rank}.pt"))
        assert source.shard == l3d.runtime.distributed.Shard(rank, 2)
        tensors = {k: v.contiguous() for k, v in decomposition.state_dict().items()}
        tensors["error"] = torch.tensor(history.reconstruction_error, dtype=torch.float64)
        tensors["p_act"] = torch.tensor(history.p_act, dtype=torch.float64)
        tensors["resampled"] = torch.tensor([[r["subnetwork"], r["cost"], r["gain"], r["replaced"]]
                                             for r in history.resampled], dtype=torch.float64).view(-1, 4)
        save_file(tensors, os.path.join(out, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path):
    decomposition, history, _ = _train()
    # forked workers start with torch imported and warmed up (spawned ones take seconds to import it)
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    expected = {k: v for k, v in decomposition.state_dict().items()}
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    for k, v in expected.items():
        torch.testing.assert_close(ranks[0][k], v, rtol=1e-9, atol=1e-11)
        assert torch.equal(ranks[0][k], ranks[1][k])  # every process holds the same decomposition
    torch.testing.assert_close(ranks[0]["error"], torch.tensor(history.reconstruction_error, dtype=torch.float64))
    torch.testing.assert_close(ranks[0]["p_act"], torch.tensor(history.p_act, dtype=torch.float64))
    # only rank 0 wrote checkpoints, and they hold the final decomposition
    assert not (tmp_path / "checkpoints1").exists()
    folders = l3d.checkpoint.checkpoints(tmp_path / "checkpoints0")
    assert [f.name for f in folders][-1] == f"step-{4 * 96 // BATCH:08d}"
    saved = l3d.Decomposition.load(folders[-1])
    torch.testing.assert_close(saved.state_dict()["decoder.0.core"], ranks[0]["decoder.0.core"], rtol=0, atol=0)


def test_resampling_over_two_gloo_processes_matches_one_process(tmp_path):
    """Costs and residual directions summed over the shards: every process re-seeds the subnetwork one process
    would, with the same direction."""
    decomposition, history, _ = _train(resample_every=1)
    assert sum(r["replaced"] for r in history.resampled) >= 2      # the check below covers actual re-seedings
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path), 1), nprocs=2, join=True, start_method="fork")
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    expected = torch.tensor([[r["subnetwork"], r["cost"], r["gain"], r["replaced"]] for r in history.resampled],
                            dtype=torch.float64)
    torch.testing.assert_close(ranks[0]["resampled"], expected, rtol=1e-9, atol=1e-9)
    for k, v in decomposition.state_dict().items():
        torch.testing.assert_close(ranks[0][k], v, rtol=1e-8, atol=1e-10)
        assert torch.equal(ranks[0][k], ranks[1][k])


def test_refit_over_two_gloo_processes_matches_one_process(tmp_path):
    """The refit's sums over the shards: every process moves every subnetwork as one process would."""
    decomposition, _, source = _train()
    done = refit_(decomposition, source, min_share=0.3)
    assert sum(done.refitted) >= 2 and min(done.cos) < 0.999          # the check below covers actual moves
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path), 0, True), nprocs=2, join=True, start_method="fork")
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    for r in range(2):
        assert torch.load(tmp_path / f"refit{r}.pt")["samples"] == done.samples
    for k, v in decomposition.state_dict().items():
        torch.testing.assert_close(ranks[0][k], v, rtol=1e-8, atol=1e-10)
        assert torch.equal(ranks[0][k], ranks[1][k])


class TinySequenceModel(torch.nn.Module):
    """(items, positions, 3) -> logits (items, positions, 4), mixing earlier positions in."""

    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Linear(3, 5)
        self.out = torch.nn.Linear(5, 4)

    def forward(self, x):
        h = torch.tanh(self.inp(x)).cumsum(1)
        return self.out(h)


@pytest.mark.parametrize("sequence", [False, True])
def test_shards_of_a_batch_are_the_single_process_batch(sequence):
    torch.manual_seed(0)
    if sequence:
        model, inputs = TinySequenceModel().double(), torch.randn(24, 6, 3, dtype=torch.float64)
        collector = l3d.GradientCollector(model, ["inp.*", "out.weight"], divergence="kl", sequence=True)
    else:
        model, inputs = TMS().untied().double(), torch.rand(24, 5, dtype=torch.float64)
        collector = l3d.GradientCollector(model, ["W_in", "b"])
    sources = [l3d.GradientSource(collector, inputs, 8, chunk_size=16, seed=4, shard=Shard(r, 2)) for r in range(2)]
    whole = l3d.GradientSource(collector, inputs, 8, chunk_size=16, seed=4, shard=Shard())
    directions = l3d.Decomposition(collector.shapes, 3, 2, seed=1).double().encoder
    batches = 0
    for g, g0, g1 in zip(whole, *sources):  # same projections and norms, sample by sample
        torch.testing.assert_close(torch.cat([g0.project(directions), g1.project(directions)]), g.project(directions),
                                   rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(torch.cat([g0.sq_norms(), g1.sq_norms()]), g.sq_norms(), rtol=1e-12, atol=1e-14)
        batches += 1
    assert batches == 3


def test_shard_active_is_the_deprecated_name_of_distributed():
    for shard in (Shard(0, 1), Shard(1, 4)):
        with pytest.warns(DeprecationWarning, match="Shard.active is deprecated, renamed distributed"):
            assert shard.active is shard.distributed
