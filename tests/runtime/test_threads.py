"""CPU threads: set for the duration of a call and restored; the environment wins over the rule; small work gets one."""
import pytest
import torch

import l3d
from l3d.experiments.toys import TMS, sparse_features, train_toy
from l3d.runtime.threads import SMALL_WORK, cpu_threads, default_threads


@pytest.fixture
def no_thread_env(monkeypatch):
    monkeypatch.delenv("L3D_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_cpu_threads_sets_and_restores(two_threads):
    with cpu_threads(1) as n:
        assert n == torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), cpu_threads(1):
        raise RuntimeError("the count comes back after an error too")
    assert torch.get_num_threads() == 2
    with cpu_threads(None) as n:                    # None leaves torch as it is
        assert n == 2
    with pytest.raises(ValueError, match="positive int"), cpu_threads(0):
        pass


def test_small_work_gets_one_thread_and_large_work_torch_s_setting(no_thread_env):
    assert default_threads(SMALL_WORK - 1) == 1
    assert default_threads(SMALL_WORK) is None


def test_environment_wins_over_the_rule(no_thread_env, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")       # make figures: one thread whatever the work
    assert default_threads(10 * SMALL_WORK) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3,2")     # OpenMP's nested form: the outer count
    assert default_threads(1) == 3
    monkeypatch.setenv("L3D_THREADS", "2")           # l3d's own variable wins over OMP_NUM_THREADS
    assert default_threads(1) == 2
    monkeypatch.setenv("L3D_THREADS", "many")
    with pytest.raises(ValueError, match=r"\$L3D_THREADS"):
        default_threads(1)


def test_calls_run_with_the_chosen_threads_and_restore_them(no_thread_env, two_threads, monkeypatch):
    model = TMS().untied()
    inputs = sparse_features(64, 5, generator=torch.Generator().manual_seed(0))
    collector = l3d.GradientCollector(model, "*")
    source = l3d.GradientSource(collector, inputs, batch_size=32)
    assert source.work == 32 * (10 + 10 + 5)
    decomposition = l3d.Decomposition(collector.shapes, 3, rank=1, seed=0)
    seen = []
    l3d.fit(decomposition, source, 1, progress=False, callback=lambda step, parts: seen.append(torch.get_num_threads()))
    l3d.fit(decomposition, source, 1, progress=False, threads=2,
            callback=lambda step, parts: seen.append(torch.get_num_threads()))
    assert seen == [1, 1, 2, 2] and torch.get_num_threads() == 2
    monkeypatch.setenv("L3D_THREADS", "2")
    seen.clear()
    l3d.fit(decomposition, source, 1, progress=False, callback=lambda step, parts: seen.append(torch.get_num_threads()))
    assert seen == [2, 2]


def test_toy_training_and_impact_restore_the_thread_count(no_thread_env, two_threads, monkeypatch):
    counts = []
    original = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        counts.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    data = sparse_features(64, 5, generator=torch.Generator().manual_seed(0))
    train_toy(TMS(), data, data, epochs=1, progress=False)
    assert set(counts) == {1} and torch.get_num_threads() == 2
    model = TMS().untied()
    collector = l3d.GradientCollector(model, "*")
    decomposition = l3d.Decomposition(collector.shapes, 3, rank=1, seed=0)
    encode, counts[:] = decomposition.encode, []
    monkeypatch.setattr(decomposition, "encode", lambda grads: counts.append(torch.get_num_threads()) or encode(grads))
    scores = l3d.impact(decomposition, collector, data, n_ref=2)
    assert scores.shape == (64, 3) and counts == [1, 1] and torch.get_num_threads() == 2
