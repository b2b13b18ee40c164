"""Toy training says where a toy diverged (issue 27: 02's compiled toys held NaN and training never said so)."""
import math

import pytest
import torch

from l3d.experiments.toys import TMS, sparse_features, train_toy, train_toys, train_toys_best_of


def data(seed=0, n=64):
    x = sparse_features(n, 5, generator=torch.Generator().manual_seed(seed))
    return x, x


def test_a_diverging_lr_raises_naming_the_model_its_seed_and_the_epoch():
    x, y = data()
    torch.manual_seed(0)
    # lr 1e3: AdamW moves every weight by about 1e3 a step; the loss overflows float32 in epoch 3 (measured)
    with pytest.raises(FloatingPointError, match=r"toy model 0 \(batch-order seed 7\) diverged in epoch 3 of 5: "
                                                 r"its mean training loss is inf \(lr 1000.0\)"):
        train_toys([TMS(5, 2), TMS(5, 2)], [x, x], [y, y], epochs=5, batch_size=16, lr=1e3, seeds=[7, 8],
                   progress=False)
    with pytest.raises(FloatingPointError, match="diverged in epoch 1 of 5: its mean training loss is nan"):
        train_toy(TMS(5, 2), x, y, epochs=5, batch_size=16, lr=1e20, progress=False)


def test_continue_keeps_training_the_others_as_if_alone():
    x, y = data()
    torch.manual_seed(0)
    good, bad, alone = TMS(5, 2), TMS(5, 2), TMS(5, 2)
    alone.load_state_dict(good.state_dict())
    with torch.no_grad():
        bad.W_in.mul_(1e30)                       # its outputs overflow float32: the loss is inf, then NaN
    losses = train_toys([bad, good], [x, x], [y, y], epochs=3, batch_size=16, lr=0.01, seeds=[1, 2],
                        on_divergence="continue", progress=False)
    reference = train_toys([alone], [x], [y], epochs=3, batch_size=16, lr=0.01, seeds=[2], progress=False)
    assert not any(math.isfinite(v) for v in losses[0])
    assert losses[1] == pytest.approx(reference[0], rel=1e-6)
    torch.testing.assert_close(good.W_in, alone.W_in, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="on_divergence must be 'raise' or 'continue', got 'skip'"):
        train_toys([good], [x], [y], epochs=1, on_divergence="skip")


def scaled_builds(bad: set[int]):
    """build() for train_toys_best_of: the r-th call's TMS has weights times 1e30 (diverges at once) when r % 3 in
    bad."""
    calls = []

    def build():
        model = TMS(5, 2)
        if len(calls) % 3 in bad:
            with torch.no_grad():
                model.W_in.mul_(1e30)
        calls.append(1)
        return model
    return build


def test_best_of_drops_a_diverged_initialization_with_a_warning():
    pairs = [data(0), data(1)]
    with pytest.warns(RuntimeWarning,
                      match=r"seed 4: initialization 1 in epoch 1 diverged .*the best of the other 2 kept"):
        models, losses = train_toys_best_of(scaled_builds({1}), pairs, seeds=[3, 4], restarts=3, epochs=2,
                                            batch_size=16, progress=False)
    assert all(math.isfinite(v) for seed_losses in losses for v in seed_losses)
    assert all(torch.isfinite(p).all() for m in models for p in m.parameters())


def test_best_of_raises_when_every_initialization_of_a_seed_diverged():
    with pytest.raises(FloatingPointError, match=r"every toy model of seed 3 diverged: initialization 0 in epoch 1, "
                                                 r"initialization 1 in epoch 1, initialization 2 in epoch 1 of 2"):
        train_toys_best_of(scaled_builds({0, 1, 2}), [data(0)], seeds=[3], restarts=3, epochs=2, batch_size=16,
                           progress=False)


def test_weights_broken_by_the_last_step_alone_count_as_diverged(monkeypatch):
    x, y = data()
    model = TMS(5, 2)
    step = torch.optim.AdamW.step

    def last_step_breaks(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        last_step_breaks.calls += 1
        if last_step_breaks.calls == 4:        # 64 samples / 16 = 4 steps: the only epoch's last step
            for group in self.param_groups:
                for p in group["params"]:
                    p.data.fill_(math.nan)
        return out
    last_step_breaks.calls = 0
    monkeypatch.setattr(torch.optim.AdamW, "step", last_step_breaks)
    with pytest.raises(FloatingPointError, match="diverged in epoch 1 of 1: its weights are not finite"):
        train_toy(model, x, y, epochs=1, batch_size=16, lr=0.01, progress=False)
