"""Notebook 07's tables: the headline (APD's and SPD's published numbers beside L3D's), per seed, the refit and the
stability check."""
from __future__ import annotations

from collections.abc import Sequence

from .. import published
from ..stability import Stability

# APD's and SPD's published numbers per setting (l3d.experiments.published; SPD: spd_paper.md:169-174, APD:
# apd_paper.md:156-159)
PUBLISHED = published.benchmark_numbers()


def stability_table(stability: dict[str, Stability]) -> list[dict]:
    """One row per (setting, seed) of `check_stability`: its outcome (features recovered, dead subnetworks)
    unperturbed and in each rerun, and whether it changed."""
    def shown(o: list) -> str:
        return f"{o[0]}{' (all)' if o[1] else ''}, {o[2]} dead"

    return [{"setting": setting, "seed": r["seed"], "recovered, dead": shown(r["outcome"]),
             "perturbed reruns": " / ".join(map(shown, r["perturbed"])), "changed": "yes" if r["changed"] else "no"}
            for setting, s in stability.items() for r in s.per_seed]


def headline_table(summary: dict[str, dict], minutes: bool = True) -> list[dict]:
    """One row per setting: APD's and SPD's published MMCS / ML2R beside L3D's median, min and success over seeds, and
    (minutes) the decompositions' CPU minutes."""
    rows = []
    for setting, s in summary.items():
        theirs = PUBLISHED.get(setting, {})
        rows.append({
            "setting": setting,
            "APD MMCS / ML2R": "{mmcs:.3f} / {ml2r:.3f}".format(**theirs["APD"]) if "APD" in theirs else "-",
            "SPD MMCS / ML2R": "{mmcs:.3f} / {ml2r:.3f}".format(**theirs["SPD"]) if "SPD" in theirs else "-",
            "L3D MMCS median (min)": f"{s['median']:.4f} ({s['min']:.4f})",
            "L3D ML2R median (range)": f"{s['ml2r_median']:.3f} ({s['ml2r_min']:.3f}-{s['ml2r_max']:.3f})",
            "all features recovered": f"{s['success']} of {s['seeds']} "
                                      f"(fewest {s['fewest_recovered']} of {s['n_features']})",
            "error median (range)": f"{s['reconstruction_error_median']:.3f} ({s['reconstruction_error_min']:.3f}-"
                                    f"{s['reconstruction_error_max']:.3f})",
            **({"CPU min": f"{s['minutes']:.1f}"} if minutes else {}),
        })
    return rows


def refit_table(rows: Sequence[dict]) -> list[dict]:
    """Per refitted setting (rows with "refit"): how many subnetworks were refitted over all seeds, the fewest
    samples one subnetwork explained alone, and the range over seeds of the smallest |cos| between a refitted
    direction and its trained one (how far the refit moved the subnetwork it moved most)."""
    table = []
    for setting in dict.fromkeys(r["setting"] for r in rows if "refit" in r):
        refits = [r["refit"] for r in rows if r["setting"] == setting and "refit" in r]
        moved = [min(c for c, done in zip(f["cos"], f["refitted"]) if done) for f in refits if any(f["refitted"])]
        table.append({"setting": setting,
                      "refitted": f"{sum(map(sum, (f['refitted'] for f in refits)))} of "
                                  f"{sum(len(f['refitted']) for f in refits)}",
                      "fewest samples alone": min(min(f["samples"]) for f in refits),
                      "smallest |cos| to trained, per seed": f"{min(moved):.3f}-{max(moved):.3f}" if moved else "-"})
    return table


def seed_table(rows: Sequence[dict]) -> list[dict]:
    """One row per decomposition: setting, seed, MMCS, ML2R, features recovered, reconstruction error, and the
    epochs at which resampling re-seeded a subnetwork ("-": none)."""
    return [{"setting": r["setting"], "seed": r["seed"], "MMCS": f"{r['mmcs']:.4f}", "ML2R": f"{r['ml2r']:.3f}",
             "recovered": f"{r['recovered']}/{len(r['max_cos'])}", "error": f"{r['reconstruction_error']:.3f}",
             "re-seeded at epoch": ", ".join(map(str, r.get("reseeded_at", []))) or "-"}
            for r in rows]
