"""Settings: dataclasses that check every field, read notebook parameters and record themselves whole."""
import dataclasses

import pytest

from l3d.experiments.toy_experiment import ToyExperiment, ToyTraining
from l3d.runtime.settings import Settings, bounded


@dataclasses.dataclass(frozen=True)
class Inner(Settings):
    epochs: int = bounded(10, low=1)
    lr: float = bounded(0.1, low=0, open_low=True)


@dataclasses.dataclass(frozen=True)
class Outer(Settings):
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    name: str = bounded("a", choices=("a", "b"))
    flag: bool = False
    inner: Inner = dataclasses.field(default_factory=Inner, metadata={"prefix": "inner_"})

    def check(self):
        return ["seeds must not be empty"] if not self.seeds else []


def test_from_parameters_reads_a_nested_settings_class_under_its_prefix():
    s = Outer.from_parameters({"inner_epochs": 3, "epochs": 99, "lr": 0.5, "name": "b", "unrelated": 1})
    assert s.inner == Inner(epochs=3) and s.name == "b"     # bare `lr` and `epochs` belong to others
    assert s.to_dict() == {"seeds": [0], "name": "b", "flag": False, "inner": {"epochs": 3, "lr": 0.1}}


def test_a_list_given_on_the_command_line_as_a_string_is_read_as_a_literal():
    assert Outer.from_parameters({"seeds": "[0, 1, 2]"}).seeds == [0, 1, 2]
    with pytest.raises(ValueError, match=r"seeds must be a list of int, got '\[0, x\]'"):
        Outer.from_parameters({"seeds": "[0, x]"})


def test_every_problem_is_named_in_one_error():
    with pytest.raises(ValueError) as caught:
        Outer(seeds=[], name="c", flag=1)
    text = str(caught.value)
    assert "name must be one of ['a', 'b'], got 'c'" in text and "flag must be bool, got 1" in text
    assert "seeds must not be empty" in text
    with pytest.raises(ValueError, match=r"bad Inner settings: lr must be > 0, got 0"):
        Inner(lr=0)


def test_toy_experiment_reads_a_notebooks_parameters_and_checks_them_together():
    parameters = {"seeds": [0, 1], "seed": 1, "toy_epochs": 5, "p_active": 0.1, "epochs": 7, "n_samples": 100,
                  "batch_size": 20, "n_subnetworks": 3}
    s = ToyExperiment.from_parameters(parameters)
    assert s.training == ToyTraining(epochs=5, p_active=0.1) and s.l3d.epochs == 7 and s.l3d.n_subnetworks == 3
    config = s.l3d_config(1)
    assert config.seed == 1 and config.chunk_size == 100
    with pytest.raises(ValueError, match="seed 2 must be one of seeds"):
        ToyExperiment.from_parameters({**parameters, "seed": 2})
    with pytest.raises(ValueError, match="batch_size 200 must not exceed n_samples 100"):
        ToyExperiment.from_parameters({**parameters, "batch_size": 200})
    with pytest.raises(ValueError, match="p_active must be > 0"):
        ToyExperiment.from_parameters({**parameters, "p_active": 0.0})


def test_bad_settings_of_nested_classes_are_reported_together_with_the_outer_ones():
    with pytest.raises(ValueError) as caught:
        ToyExperiment.from_parameters({"seeds": [0], "seed": 3, "p_active": 0.0, "top_k": 0, "toy_epochs": 0})
    text = str(caught.value)
    for problem in ("p_active must be > 0", "epochs must be >= 1, got 0", "top_k must be > 0",
                    "seed 3 must be one of seeds"):
        assert problem in text
