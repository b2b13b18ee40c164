"""A first run, in about half a minute on a laptop CPU: L3D finds the features of a toy model of superposition.

    python -m l3d.examples.quickstart --out runs/quickstart        # make quickstart

1. trains a toy model of superposition, 5 features in 2 hidden dimensions (`l3d.examples.tms`);
2. decomposes its three tensors W_in, W_out and b into 5 rank-1 subnetworks with L3D: the paper's TMS settings
   (batch 32, lr 0.01, top_k 0.1) with its 1000 epochs and lr × 0.8 every 100 scaled down to 100 and every 10;
3. prints the reconstruction error Σ‖g − ĝ‖² / Σ‖g‖² (training and held out) and which subnetwork serves
   which feature: features and subnetworks matched one-to-one (`l3d.experiments.toys.tms_feature_match`), with
   |cos| between the feature's embedding W_in[:, i] and the subnetwork's direction in hidden space (column i of
   its W_in part; 1.00 = the same direction) and the subnetwork's P_act on the held-out inputs;
4. writes into --out: subnetworks.png / .pdf (each subnetwork's direction in parameter space, paper Fig. 3),
   features.png / .pdf (the |cos| matrix and the directions over the embeddings, paper Fig. S2), dashboard/
   (index.html: a page per subnetwork, open it in a browser) and decomposition/ (`l3d.Decomposition.load`).

Every number printed follows from --seed (the same output on every run on one machine; on another CPU the last
digit may differ). Elapsed seconds go to stderr. Needs the `experiments` and `notebooks` extras (scipy,
matplotlib).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m l3d.examples.quickstart", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--out", default="runs/quickstart", help="folder for the figures, the dashboard and the "
                   "decomposition (made if missing; files of an earlier quickstart in it are replaced)")
    p.add_argument("--epochs", type=_positive, default=100, help="L3D epochs; the lr decays × 0.8 every tenth of them")
    p.add_argument("--samples", type=_positive, default=1000, help="inputs L3D decomposes (and as many held out)")
    p.add_argument("--toy-epochs", type=_positive, default=100, help="epochs of the toy model's training")
    p.add_argument("--seed", type=int, default=0, help="every random draw follows from it (0 .. 2**64 - 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    return p


def _shown(path: Path) -> str:
    """`path` relative to the working directory when inside it, else as it is."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def feature_table(run, p_act: Sequence[float]) -> tuple[list[dict], dict]:
    """Which subnetwork serves which feature: one row per feature (its matched subnetwork, their |cos| and the
    subnetwork's P_act, given per subnetwork), and `tms_feature_match`'s result."""
    from ..experiments.toys import tms_feature_match

    found = tms_feature_match(run.collector.model, run.decomposition.decoder_directions())
    rows = [{"feature": i, "subnetwork": k, "|cos|": round(found["cos"][i, k].item(), 2), "P_act": round(p_act[k], 2)}
            for i, k in sorted(found["pairs"])]
    return rows, found


def _table(rows: list[dict]) -> str:
    """The rows as a plain text table, numbers right-aligned under their column names, two decimals."""
    keys = list(rows[0])
    cells = [[f"{row[k]:.2f}" if isinstance(row[k], float) else str(row[k]) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[j]) for c in cells)) for j, k in enumerate(keys)]
    return "\n".join("  ".join(text.rjust(w) for text, w in zip(line, widths)) for line in [keys, *cells])


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the quickstart (module docstring); returns the numbers it printed: reconstruction errors, dead
    subnetworks and the feature table's rows."""
    import matplotlib

    matplotlib.use("Agg")   # files only, no window
    args, device, out = _arguments(argv)
    started = time.perf_counter()
    model, run, held_out, found, numbers = _decompose(args, device)
    print("Writing the figures, the dashboard and the decomposition ...", flush=True)
    written, dashboard, saved = _write(out, model, run, held_out, found, args.seed)
    print(f"\nFigures:       {', '.join(_shown(p) for p in written)} (and .pdf)")
    print(f"Dashboard:     {_shown(dashboard)} (open it in a browser)")
    print(f"Decomposition: {_shown(saved)} (l3d.Decomposition.load reads it; run.json has every setting)")
    print(f"done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return numbers


def _arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, torch.device, Path]:
    """The command line, checked: its arguments, the device and the output folder."""
    import l3d

    from ..runtime.validate import SEED_MAX

    parser = _parser()
    args = parser.parse_args(argv)
    if not 0 <= args.seed <= SEED_MAX:
        parser.error(f"--seed must be in 0 .. 2**64 - 1, got {args.seed}")
    try:
        device = l3d.resolve_device(args.device)
    except ValueError as e:
        parser.error(f"--device: {e}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {args.out!r} is a file: name a folder")
    return args, device, out


def _decompose(args: argparse.Namespace, device: torch.device) -> tuple:
    """Train the toy, decompose it and print what L3D found: (model, run, held-out inputs, the feature match,
    the numbers printed)."""
    import l3d

    from . import tms

    n_features, n_hidden = 5, 2
    print(f"Training a toy model of superposition: {n_features} features in {n_hidden} hidden dimensions ...",
          flush=True)
    model, tensors, inputs, held_out = tms(n_features, n_hidden, n_samples=args.samples, n_held_out=args.samples,
                                           toy_epochs=args.toy_epochs, seed=args.seed)
    model, inputs, held_out = model.to(device), inputs.to(device), held_out.to(device)

    print(f"Decomposing {', '.join(tensors)} into {n_features} rank-1 subnetworks with L3D ({args.epochs} epochs) ...",
          flush=True)
    config = l3d.L3DConfig(n_subnetworks=n_features, rank=1, top_k=0.1, epochs=args.epochs, batch_size=32, lr=0.01,
                           lr_decay_every=max(1, args.epochs // 10), seed=args.seed)
    run = l3d.decompose(model, inputs, tensors, config)
    held = run.evaluate(held_out)
    rows, found = feature_table(run, held["p_act"])
    numbers = {"reconstruction_error": run.history.reconstruction_error[-1],
               "held_out_reconstruction_error": held["reconstruction_error"], "dead": held["dead"], "features": rows}
    print(f"\nReconstruction error: {numbers['reconstruction_error']:.2f} (last epoch), "
          f"{numbers['held_out_reconstruction_error']:.2f} (held-out inputs); dead subnetworks: "
          f"{numbers['dead'] or 'none'}")
    print("Which subnetwork serves which feature (|cos|: the feature's embedding against the subnetwork's "
          "direction in hidden space):\n")
    print(_table(rows) + "\n")
    return model, run, held_out, found, numbers


def _write(out: Path, model, run, held_out: Tensor, found: dict, seed: int) -> tuple[list[Path], Path, Path]:
    """The two figures, the dashboard and the decomposition, in `out`: (figures, dashboard, decomposition)."""
    import matplotlib.pyplot as plt

    from ..experiments.tms import AXES
    from ..report import plots
    from ..report.dashboard import collect, feature_circuits, render
    from ..report.results import save_figure

    n_features = len(found["cos"])
    out.mkdir(parents=True, exist_ok=True)
    feature_of = {k: i for i, k in found["pairs"]}
    order = [k for _, k in sorted(found["pairs"])] + [k for k in range(n_features) if k not in feature_of]
    labels = [f"subnetwork {k} (feature {feature_of[k]})" if k in feature_of else f"subnetwork {k}" for k in order]
    written = []
    fig = plots.subnetwork_heatmaps(run.decomposition.decoder_directions(), subnetworks=order, row_labels=labels,
                                    title="The toy model's subnetworks found by L3D (paper Fig. 3)", axis_labels=AXES)
    written.append(save_figure(fig, out, "subnetworks"))
    plt.close(fig)
    pairs = sorted(found["pairs"])
    columns = run.decomposition.decoder_directions()["W_in"].detach().transpose(1, 2)   # (C, features, hidden)
    fig = plots.direction_cosines(found["cos"], found["pairs"], features=model.W_in.detach().T[[i for i, _ in pairs]],
                                  directions=torch.stack([columns[k, i] for i, k in pairs]))
    written.append(save_figure(fig, out, "features"))
    plt.close(fig)
    dashboard = render(collect(
        out / "dashboard", run.decomposition, run.collector, held_out, history=run.history, seed=seed,
        title="L3D quickstart: a toy model of superposition", feature_names=[f"x{i}" for i in range(n_features)],
        output_names=[f"x̂{i}" for i in range(n_features)],
        circuits=feature_circuits(model, {"W_in": 1, "W_out": 0, "b": 0}),
        circuit_names=[f"feature {i}" for i in range(n_features)]))
    return written, dashboard, run.save(out / "decomposition")

if __name__ == "__main__":
    main()
