"""The toy models (spec §4): the toy model of superposition (`TMS`, in two layouts: notebook 01's and the field
benchmarks'), and the fully connected `MLP` that the other toys are, each in two variants, the paper's text and the
authors' code (`build`)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

LAYOUTS = ("matrices", "linear")


class TMS(nn.Module):
    """Toy model of superposition: x̂ = ReLU(W_out H_L ⋯ H_1 W_in x + b), n_features features stored in n_hidden
    dimensions. W_in (n_hidden, n_features), W_out (n_features, n_hidden), b (n_features,), and n_hidden_layers
    hidden layers H_i (n_hidden, n_hidden) that start as the identity (the field benchmarks' `-id` settings).

    tied: W_out = W_inᵀ, one matrix, as a TMS is trained; `untied()` gives the same function with W_out a
    parameter of its own, as L3D decomposes it.

    layout: how the weights are held, which names them and picks the operations that compute x̂:
      "matrices" (notebook 01): parameters W_in, W_out, b and hidden.{i}, x̂ = ReLU(x W_inᵀ H_1ᵀ ⋯ W_outᵀ + b) in
          plain matrix products; W_in drawn from N(0, 2 / n_features), b = 0.
      "linear" (notebook 07, the field benchmarks): nn.Linear modules linear1 (W_in), hidden_layers.{i} (H_i) and
          linear2 (W_out and b), goodfire-ai/spd's names (spd/experiments/tms/models.py), x̂ =
          ReLU(linear2(⋯ linear1(x))); nn.Linear's default initialization. Untied only: SPD ties W_out to W_inᵀ
          outside the model, in training (`field.train_benchmark_tms`).
    Given the same weights the two compute the same outputs and dense per-sample gradients (bit for bit on CPU),
    but they name the tensors differently, a fresh one draws another initialization, and the factored gradient
    engine (engine "auto") factors nn.Linear weights and not plain parameters, so a decomposition with it differs
    in the last bits: each notebook keeps the layout its numbers were made with.
    """

    def __init__(self, n_features: int = 5, n_hidden: int = 2, tied: bool = True, n_hidden_layers: int = 0,
                 layout: str = "matrices"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown TMS layout {layout!r}: use one of {LAYOUTS}")
        if layout == "linear" and tied:
            raise ValueError("layout='linear' holds W_out in linear2, a parameter of its own: use tied=False, or "
                             "layout='matrices' for a tied TMS")
        self.tied, self.layout = tied, layout
        if layout == "linear":
            self.linear1 = nn.Linear(n_features, n_hidden, bias=False)
            self.hidden_layers = nn.ModuleList(nn.Linear(n_hidden, n_hidden, bias=False)
                                               for _ in range(n_hidden_layers))
            self.linear2 = nn.Linear(n_hidden, n_features, bias=True)
        else:
            self.W_in = nn.Parameter(torch.randn(n_hidden, n_features) * (2 / n_features) ** 0.5)
            if not tied:
                self.W_out = nn.Parameter(self.W_in.detach().T.clone())
            self.b = nn.Parameter(torch.zeros(n_features))
            self.hidden = nn.ParameterList(torch.empty(n_hidden, n_hidden) for _ in range(n_hidden_layers))
        with torch.no_grad():   # hidden layers start as the identity
            for weight in self.hidden_weights():
                weight.copy_(torch.eye(n_hidden))

    @classmethod
    def from_weights(cls, weight: Tensor, bias: Tensor, n_hidden_layers: int = 0, layout: str = "matrices") -> TMS:
        """The untied TMS with W_in = weight (n_hidden, n_features), W_out = weightᵀ, b = bias (n_features,) and
        identity hidden layers: a tied toy's function, every tensor a parameter of its own."""
        n_hidden, n_features = weight.shape
        model = cls(n_features, n_hidden, False, n_hidden_layers, layout)
        with torch.no_grad():
            model.weight_in().copy_(weight)
            model.weight_out().copy_(weight.T)
            model.bias().copy_(bias)
        return model.to(weight.device)

    def weight_in(self) -> Tensor:
        """W_in: (n_hidden, n_features)."""
        return self.linear1.weight if self.layout == "linear" else self.W_in

    def weight_out(self) -> Tensor:
        """W_out (W_inᵀ when tied): (n_features, n_hidden)."""
        if self.layout == "linear":
            return self.linear2.weight
        return self.W_in.T if self.tied else self.W_out

    def bias(self) -> Tensor:
        """b: (n_features,)."""
        return self.linear2.bias if self.layout == "linear" else self.b

    def hidden_weights(self) -> list[Tensor]:
        """H_1 … H_L, each (n_hidden, n_hidden)."""
        return [layer.weight for layer in self.hidden_layers] if self.layout == "linear" else list(self.hidden)

    def forward(self, x: Tensor) -> Tensor:
        if self.layout == "linear":
            hidden = self.linear1(x)
            for layer in self.hidden_layers:
                hidden = layer(hidden)
            return torch.relu(self.linear2(hidden))
        hidden = x @ self.W_in.T
        for weight in self.hidden:
            hidden = hidden @ weight.T
        return torch.relu(hidden @ self.weight_out().T + self.b)

    def untied(self) -> TMS:
        """A copy with every tensor a parameter of its own (W_out too): the same function, as L3D decomposes it."""
        return self._copy(False, len(self.hidden_weights()))

    def with_identity(self) -> TMS:
        """A copy with one more hidden layer, the identity, after the others: the same function (the `-id`
        settings)."""
        return self._copy(self.tied, len(self.hidden_weights()) + 1)

    def _copy(self, tied: bool, n_hidden_layers: int) -> TMS:
        """A fresh TMS of this layout and size (drawing its initialization), given this one's weights; the hidden
        layers it has beyond this one's are the identity."""
        n_hidden, n_features = self.weight_in().shape
        model = TMS(n_features, n_hidden, tied, n_hidden_layers, self.layout)
        with torch.no_grad():
            model.weight_in().copy_(self.weight_in())
            if not tied:
                model.weight_out().copy_(self.weight_out())
            model.bias().copy_(self.bias())
            for mine, theirs in zip(model.hidden_weights(), self.hidden_weights()):
                mine.copy_(theirs)
        return model.to(self.weight_in().device)


def identity(x: Tensor) -> Tensor:
    """x itself: a layer without activation."""
    return x


class MLP(nn.Module):
    """Fully connected network `sizes[0] → … → sizes[-1]`: `activation` after every layer but the last,
    `output_activation` after the last; `hidden_bias=False` leaves every layer but the last without a bias.

    Parameters are named layers.{i}.weight (out, in) and layers.{i}.bias (out,).
    """

    ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
        "relu": nn.functional.relu, "gelu": nn.functional.gelu, "elu": nn.functional.elu, "identity": identity,
    }

    def __init__(self, sizes: list[int], activation: str = "relu", output_activation: str = "identity",
                 hidden_bias: bool = True):
        super().__init__()
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must list at least an input and an output width, all ≥ 1; got {sizes}")
        for name in (activation, output_activation):
            if name not in self.ACTIVATIONS:
                raise ValueError(f"unknown activation {name!r}: use one of {sorted(self.ACTIVATIONS)}")
        self.sizes = list(sizes)
        self.activation = self.ACTIVATIONS[activation]
        self.output_activation = self.ACTIVATIONS[output_activation]
        last = len(sizes) - 2
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=hidden_bias or i == last)
                                    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.output_activation(self.layers[-1](x))


# The toys' two variants: "authors" (the authors' code, which made the paper's figures: the reference) and
# "paper_text" (the paper's text); every constructor's default is "authors".
VARIANTS = ("authors", "paper_text")


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown toy variant {variant!r}: use one of {VARIANTS}")


def _linear_hidden_relu_output(n_in: int, n_hidden: int, n_out: int) -> MLP:
    """The authors' one-hidden-layer toy (their `SingleHiddenLayerPerceptron`, toy_models/tms.py):
    y = ReLU(W_outᵀ W_inᵀ x + b), a linear hidden layer without bias, bias and ReLU on the output, every
    weight drawn from N(0, 1) and b = 0. Their W_in (n_in, n_hidden) and W_out (n_hidden, n_out) are our
    layers.0.weight and layers.1.weight transposed (nn.Linear's (out, in)); their b is layers.1.bias."""
    model = MLP([n_in, n_hidden, n_out], "identity", "relu", hidden_bias=False)
    with torch.no_grad():
        for layer in model.layers:
            layer.weight.normal_()
        model.layers[-1].bias.zero_()
    return model


def circuit_superposition(n_features: int = 10, n_hidden: int = 5, variant: str = "authors") -> MLP:
    """Toy model of circuit superposition (TMCS), n_features → n_hidden → n_features, fit to x ↦ A x.

    paper_text: a ReLU hidden layer with biases and a linear output (the paper's text).
    authors: a linear hidden layer without bias and ReLU(· + b) on the output (the authors' code, which
    made the paper's figures; see `_linear_hidden_relu_output`).
    """
    _check_variant(variant)
    if variant == "authors":
        return _linear_hidden_relu_output(n_features, n_hidden, n_features)
    return MLP([n_features, n_hidden, n_features], "relu")


def high_rank_circuits(n_features: int | None = None, n_hidden: int = 10, variant: str = "authors") -> MLP:
    """Higher-rank circuits: n_features (in groups) → n_hidden → n_features, fit to x ↦ A x; the two
    variants as in `circuit_superposition`. n_features None: the paper's text has 25 inputs in 5 groups
    of 5, the authors' scripts and figures 30 in 6 groups of 5."""
    _check_variant(variant)
    if variant == "authors":
        n_features = n_features or 30
        return _linear_hidden_relu_output(n_features, n_hidden, n_features)
    n_features = n_features or 25
    return MLP([n_features, n_hidden, n_features], "relu")


def square_mlp(n_features: int = 5, width: int | None = None, depth: int = 4, variant: str = "authors") -> MLP:
    """Complex loss landscape: n_features → depth hidden layers of `width` → n_features, fit to x ↦ x².

    paper_text: GeLU between layers, linear output, PyTorch's default initialization, width 5.
    authors (their `CustomMLP`, toy_models/parallel_serial_network.py): ELU after every layer including
    the output, weights He-normal N(0, 2 / fan_in), biases U(0.01, 1), width 10.
    width None: the variant's width.
    """
    _check_variant(variant)
    if variant == "paper_text":
        return MLP([n_features, *[width or 5] * depth, n_features], "gelu")
    model = MLP([n_features, *[width or 10] * depth, n_features], "elu", "elu")
    with torch.no_grad():
        for layer in model.layers:
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            nn.init.uniform_(layer.bias, 0.01, 1.0)
    return model


TOYS: dict[str, Callable[..., MLP]] = {
    "tmcs": circuit_superposition, "high_rank": high_rank_circuits, "square": square_mlp,
}


def build(toy: str, variant: str = "authors", **sizes: int) -> MLP:
    """A fresh (untrained) toy: toy "tmcs", "high_rank" or "square", variant "authors" or "paper_text";
    `sizes` go to the toy's constructor (`circuit_superposition`, `high_rank_circuits`, `square_mlp`)."""
    if toy not in TOYS:
        raise ValueError(f"unknown toy {toy!r}: use one of {sorted(TOYS)}")
    return TOYS[toy](**sizes, variant=variant)
