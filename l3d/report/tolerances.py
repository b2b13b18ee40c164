"""The tolerances of every notebook's headline numbers at each scale, each with the reason for its width.

`TOLERANCES[notebook][scale]` maps key-path patterns ("median/mmcs", "per_seed/*/reconstruction_error") to a
`Tolerance`; `l3d.report.headlines` finds a notebook's headline numbers with them and compares runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    """|now − reference| may be up to max(abs, rel · |reference|); `reason` says why. compare=False: the number is
    recorded and shown but not compared (a discrete outcome not stable under the runs that set the tolerances)."""

    abs: float = 0.0
    rel: float = 0.0
    reason: str = ""
    compare: bool = True

    def allows(self, reference: float | None, now: float | None) -> bool:
        """Whether `now` is within this tolerance of `reference` (None and NaN: missing, equal only to each other;
        booleans: equal)."""
        if not self.compare:
            return True
        missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in (reference, now)]
        if any(missing):
            return all(missing)
        if isinstance(reference, bool) or isinstance(now, bool):
            return reference == now
        return abs(now - reference) <= max(self.abs, self.rel * abs(reference)) + 1e-12

    def __str__(self) -> str:
        if not self.compare:
            return "not compared"
        if not self.abs and not self.rel:
            return "exact"
        parts = ([f"±{self.abs:g}"] if self.abs else []) + ([f"±{self.rel:.0%}"] if self.rel else [])
        return " or ".join(parts)


def exact(reason: str) -> Tolerance:
    """A discrete outcome compared exactly."""
    return Tolerance(reason=reason)


def recorded(reason: str) -> Tolerance:
    """A number recorded beside the others but not compared (`reason`: why)."""
    return Tolerance(reason=reason, compare=False)


# --- the reasons, written once -------------------------------------------------------------------
# Test scale (notebooks/test_parameters.json): few seeds, epochs and samples, so one draw of a chaotic process.
# Measured on one machine (Xeon, AVX-512, torch 2.14.1, 2026-12-06): the toys' numbers (01-04, 07) were
# bit-identical under ATEN_CPU_CAPABILITY=avx2, OMP_NUM_THREADS=2 and L3D_THREADS=2; 05's errors moved by up to
# 6e-4 (avx2), 06's by 1e-8. Across machines: 07's reference made elsewhere and this machine agree on every count,
# on MMCS to 5e-4 and on errors to 3 digits, but one row's ML2R median differs by 6 % (2.720 / 2.885, issue 27);
# 06's error moved 0.003 with a model retrained on another CPU (the model is shipped now). The tolerances sit above
# those and below what a deliberate change of one setting does (lr x 2 or top_k 0.2 at test scale: every notebook
# then has a number outside; see the note of issue 27). On an AMD EPYC (AVX2 only, 2026-12-07) the toys' numbers are
# not bit-identical to the Xeon's (other CPU kernels), yet every paper-scale headline number of 01-04
# and 07 made there was within these tolerances of the committed ones but 03's stability count (see its reason).
TEST_ERROR = ("test scale: a reconstruction error; same-machine spread 0 (toys), errors of 07's toys agreed to "
              "3 digits across machines; 0.01 or 5 %")
TEST_TMS_ERROR = ("test scale: a TMS toy's error (as 07's 5-2, which agreed to 3 digits across machines); same-machine "
                  "spread 0; 2 % (lr x 2 moves it 2.3-2.8 %)")
TEST_SCORE = ("test scale: a score in [0, 1] (MMCS, cosine, r, impact share); same-machine spread 0, 07's MMCS agreed "
              "to 5e-4 across machines; 0.02")
TEST_TMS_SCORE = ("test scale: a TMS toy's MMCS or cosine (07's 5-2 agreed to 5e-4 across machines); 0.005 (lr x 2 "
                  "moves seed 0's MMCS by 0.011)")
TEST_RATIO = ("test scale: ML2R, a norm ratio that swings with one feature's fit: 6 % between two machines on 07's 5-2 "
              "(issue 27), so 15 %")
TEST_MODEL_ERROR = ("test scale, the shipped model (the same on every CPU): spread under avx2 / 2 threads 6e-4 "
                    "(05) and 1e-8 (06), so 0.005")
TEST_COUNT = ("test scale: a count that did not change under avx2 kernels, 2 threads (OMP and L3D) here, nor between "
              "two machines (07); exact")
# Paper scale (`make figures`).
PAPER_ERROR = ("paper scale: seeds that kept their outcome on another CPU matched to 3 digits (issue 27: 02's seeds 0 "
               "and 2); ten times that")
PAPER_SCORE = "paper scale: a score in [0, 1] of a seed that keeps its outcome moves by less than this across CPUs"
PAPER_IMPACT_SHARE = PAPER_SCORE + " (an impact share over 200 probes)"
PAPER_COUNT = ("paper scale: a discrete outcome; a change is another result (issue 27: 02's '3 of 3 seeds' became "
               "2 of 3 on another CPU), so it is compared exactly and shows as not within")

TOLERANCES: dict[str, dict[str, dict[str, Tolerance]]] = {
    "01_toy_model_of_superposition": {
        "test": {
            "median/reconstruction_error": Tolerance(rel=0.02, reason=TEST_TMS_ERROR),
            "per_seed/*/reconstruction_error": Tolerance(rel=0.02, reason=TEST_TMS_ERROR),
            "median/mmcs": Tolerance(abs=0.005, reason=TEST_TMS_SCORE),
            "per_seed/*/mmcs": Tolerance(abs=0.005, reason=TEST_TMS_SCORE),
            "median_min_feature_cosine": Tolerance(abs=0.005, reason=TEST_TMS_SCORE),
            "seeds_with_all_features_recovered": exact(TEST_COUNT),
            "n_seeds": exact("the number of seeds: a setting"),
            "stability/n_changed": exact(TEST_COUNT + " (the stability check's count of seeds whose outcome changed)"),
        },
        "paper": {
            "median/reconstruction_error": Tolerance(abs=0.01, reason=PAPER_ERROR),
            "median/mmcs": Tolerance(abs=0.005, reason=PAPER_SCORE),
            "median/intervention_selectivity": Tolerance(rel=0.05, reason="paper scale: a ratio of mean output "
                                                         "changes (about 50); 1e-6 perturbations moved its median by "
                                                         "2e-4 (2026-12-06); 5 %"),
            "median_min_feature_cosine": Tolerance(abs=0.005, reason=PAPER_SCORE),
            "seeds_with_all_features_recovered": exact(PAPER_COUNT + "; the stability check changed no seed's outcome"),
            "n_seeds": exact("the number of seeds: a setting"),
            "stability/n_changed": exact(PAPER_COUNT),
            "like_authors/median/reconstruction_error": Tolerance(abs=0.01, reason=PAPER_ERROR),
            "like_authors/seeds_with_all_features_recovered": exact(PAPER_COUNT + "; the stability check changed no "
                                                                                  "seed's outcome"),
            "like_authors/stability/n_changed": exact(PAPER_COUNT),
        },
    },
    "02_circuit_superposition": {
        "test": {
            "median/reconstruction_error": Tolerance(abs=0.01, rel=0.05, reason=TEST_ERROR),
            "median/circuit_aligned_error": Tolerance(abs=0.01, rel=0.05, reason=TEST_ERROR),
            "median/aligned_reconstruction_error": Tolerance(abs=0.01, rel=0.05, reason=TEST_ERROR),
            "median/aligned_then_paper_reconstruction_error": Tolerance(abs=0.01, rel=0.05, reason=TEST_ERROR),
            "median/paper_r": Tolerance(abs=0.02, reason=TEST_SCORE),
            "median/paper_r_own_paths": Tolerance(abs=0.02, reason=TEST_SCORE),
            "median/r2": Tolerance(abs=0.02, reason=TEST_SCORE),
            "median/mmcs": Tolerance(abs=0.02, reason=TEST_SCORE),
            "median/min_impact_share": Tolerance(abs=0.02, reason=TEST_SCORE),
            "median/n_live": exact(TEST_COUNT),
            "median/all_matched_seeds": exact(TEST_COUNT),
            "median/one_per_circuit_seeds": exact(TEST_COUNT),
            "stability/n_changed": exact(TEST_COUNT + " (the stability check at test scale: 0 of 2 seeds changed)"),
            "single_start/median/reconstruction_error": Tolerance(abs=0.01, rel=0.05, reason=TEST_ERROR),
            "single_start/median/paper_r": Tolerance(abs=0.02, reason=TEST_SCORE),
        },
        "paper": {
            "median/reconstruction_error": Tolerance(abs=0.01, reason=PAPER_ERROR),
            "median/paper_r": Tolerance(abs=0.01,
                                        reason=PAPER_ERROR + "; a seed that flips moves it by 0.05 and shows"),
            "median/r2": Tolerance(abs=0.01, reason=PAPER_ERROR),
            "median/mmcs": Tolerance(abs=0.01, reason=PAPER_SCORE),
            "median/min_impact_share": Tolerance(abs=0.02, reason=PAPER_IMPACT_SHARE),
            "median/all_matched_seeds": exact(PAPER_COUNT + "; stable: best of 4 starts, 0 of 5 seeds changed under 3 "
                                                            "perturbations each (2026-12-06)"),
            "median/one_per_circuit_seeds": exact(PAPER_COUNT + "; stable: best of 4 starts, 0 of 5 seeds changed "
                                                                "under 3 perturbations each (2026-12-06)"),
            "stability/n_changed": exact("paper scale: the stability check of the default (best of 4 starts): 0 of 5 "
                                         "seeds changed; another count is another result"),
            "single_start/median/*": recorded("paper scale, one start (like for like with the authors' code): not "
                                              "stable, 1 of 5 seeds changed under the check and the medians moved by "
                                              "up to 0.08 (min_impact_share) with the start drawn apart (seed s, "
                                              "2026-12-06); the first of the 4 starts (seed 1000·s, since "
                                              "2026-12-07) is another draw: a rate to read, not a number to compare"),
            "single_start/stability/n_changed": recorded("paper scale, one start: the count of a chaotic process "
                                                         "(1 of 5 seeds with seed s, 2026-12-06; 0 of 5 with the first "
                                                         "of the 4 starts, 2026-12-07)"),
        },
    },
    "03_high_rank_circuits": {
        "test": {
            "median/*/reconstruction_error": Tolerance(abs=0.01, rel=0.05, reason=TEST_ERROR),
            "median/*/mmcs": Tolerance(abs=0.02, reason=TEST_SCORE),
            "median/*/min_impact_share": Tolerance(abs=0.02, reason=TEST_SCORE),
            "median/*/n_live": exact(TEST_COUNT),
            "median/*/clean_groups": exact(TEST_COUNT),
            "median/*/one_per_group_seeds": exact(TEST_COUNT),
            "median/*/all_clean_seeds": exact(TEST_COUNT),
            "median_paper_loss/*/reconstruction_error": Tolerance(abs=0.01, rel=0.05, reason=TEST_ERROR),
            "median_paper_loss/*/mmcs": Tolerance(abs=0.02, reason=TEST_SCORE),
            "median_paper_loss/*/n_live": exact(TEST_COUNT),
            "single_start/median_paper_loss/*/reconstruction_error": Tolerance(abs=0.01, rel=0.05, reason=TEST_ERROR),
            "single_start/median_paper_loss/*/n_live": exact(TEST_COUNT + "; its stability check at test scale "
                                                             "changed no seed"),
            "stability/n_changed": exact(TEST_COUNT + " (the stability check's own count: 0 of 4 at test scale)"),
            "single_start/stability/n_changed": exact(TEST_COUNT + " (0 of 2 at test scale)"),
        },
        "paper": {
            "median/*/reconstruction_error": Tolerance(abs=0.01, reason=PAPER_ERROR),
            "median/*/min_impact_share": Tolerance(abs=0.02, reason=PAPER_IMPACT_SHARE),
            "median/*/n_live": exact(PAPER_COUNT),
            "median/*/clean_groups": exact(PAPER_COUNT),
            "median/*/one_per_group_seeds": exact(PAPER_COUNT),
            "median/*/all_clean_seeds": exact(PAPER_COUNT),
            "median_paper_loss/*/reconstruction_error": Tolerance(abs=0.01, reason=PAPER_ERROR),
            "median_paper_loss/*/min_impact_share": Tolerance(abs=0.02, reason=PAPER_IMPACT_SHARE),
            "median_paper_loss/*/n_live": exact(PAPER_COUNT + "; with the best of 4 starts the median (9) held "
                                                "under the stability check on both CPUs; single reruns not (below)"),
            "median_paper_loss/*/all_clean_seeds": exact(PAPER_COUNT),
            "stability/silence/*/n_changed": exact(PAPER_COUNT + " (the stability check's count of seeds whose outcome "
                                                   "changed under the main loss: 0 of 5 on both CPUs)"),
            "stability/n_changed": recorded(
                "paper scale, the stability check's count of (seed, rank, loss) whose outcome changed, both losses: 0 "
                "of 10 on the Xeon (AVX-512), 2 of 10 on an AMD EPYC (AVX2; 2026-12-07), both from the paper's loss, "
                "where one of its 9 live subnetworks died (9 -> 8) in 1 of 3 perturbed reruns of seeds 2 and 3; not "
                "stable across CPUs, so recorded; the main loss's count is compared (stability/silence/*/n_changed)"),
            "single_start/median_paper_loss/*/reconstruction_error": Tolerance(abs=0.01, reason=PAPER_ERROR),
            "single_start/median_paper_loss/*/all_clean_seeds": exact(PAPER_COUNT),
            "single_start/median_paper_loss/*/n_live": recorded(
                "paper scale, one start under the paper's loss: the live count changed for seed 0 (7 -> 8) in 1 of 3 "
                "perturbed reruns with the start drawn apart (2026-12-06), and the first of the 4 starts (since "
                "2026-12-07) gives another draw (median 7 -> 9), so its median is one draw; the notebook reports it "
                "as a rate (changed_rate)"),
            "single_start/stability/changed_rate": recorded("paper scale: the share of one-start reruns whose outcome "
                                                            "changed (2 of 15 with the start drawn apart, 0 of 15 with "
                                                            "the first of the 4 starts); a rate, not compared"),
        },
    },
    "04_complex_loss_landscape": {
        "test": {
            "median/5x2/*/reconstruction_error": Tolerance(abs=0.01, rel=0.05, reason=TEST_ERROR),
            "median/5x2/*/mmcs": Tolerance(abs=0.02, reason=TEST_SCORE),
            "median/5x2/*/min_impact_share": Tolerance(abs=0.02, reason=TEST_SCORE),
            "median/5x2/*/n_dead": exact(TEST_COUNT),
            "median/5x2/*/all_matched_seeds": exact(TEST_COUNT),
            "median/5x2/authors/circuit_aligned_error": Tolerance(abs=0.01, rel=0.05, reason=TEST_ERROR),
            "median/5x2/authors/aligned_reconstruction_error": Tolerance(abs=0.01, rel=0.05, reason=TEST_ERROR),
            "median/*/reconstruction_error": Tolerance(abs=0.01, rel=0.05, reason=TEST_ERROR),
            "median/*/mmcs": Tolerance(abs=0.02, reason=TEST_SCORE),
            "median/*/n_dead": exact(TEST_COUNT),
            "median/*/all_matched_seeds": exact(TEST_COUNT),
            "median/5x2/*/one_per_circuit_seeds": exact(TEST_COUNT),
            "median/*/one_per_circuit_seeds": exact(TEST_COUNT),
            "stability/n_changed": exact(TEST_COUNT + " (the stability check at test scale: 0 of 2 seeds changed)"),
        },
        "paper": {
            "median/5x2/*/reconstruction_error": Tolerance(abs=0.01, reason=PAPER_ERROR),
            "median/5x2/*/mmcs": Tolerance(abs=0.01, reason=PAPER_SCORE),
            "median/5x2/*/min_impact_share": Tolerance(abs=0.02, reason=PAPER_IMPACT_SHARE),
            "median/5x2/authors/all_matched_seeds": exact(PAPER_COUNT + "; stable: one start, 0 of 5 seeds changed "
                                                                        "under 3 perturbations each (2026-12-06)"),
            "median/5x2/authors/one_per_circuit_seeds": exact(PAPER_COUNT + "; stable: one start, 0 of 5 seeds changed "
                                                                            "under 3 perturbations each (2026-12-06)"),
            "median/5x2/*/all_matched_seeds": recorded("paper scale, the other toy: no stability check, "
                                                       "so not compared"),
            "median/5x2/*/one_per_circuit_seeds": recorded("paper scale, the other toy: no stability check"),
            "stability/n_changed": exact("paper scale: the stability check at 5 x rank 2 (one start): 0 of 5 seeds "
                                         "changed; another count is another result"),
            "median/*/reconstruction_error": Tolerance(abs=0.01, reason=PAPER_ERROR),
            "median/*/all_matched_seeds": recorded("paper scale, the sweep over subnetworks: no stability check, so "
                                                   "not compared"),
            "median/*/one_per_circuit_seeds": recorded("paper scale, the sweep over subnetworks: no stability check"),
        },
    },
    "05_transformer": {
        "test": {
            "reconstruction_error": Tolerance(abs=0.005, reason=TEST_MODEL_ERROR),
            "test_reconstruction_error": Tolerance(abs=0.005, reason=TEST_MODEL_ERROR),
            "dead_fraction": exact(TEST_COUNT + " (a share of 10 subnetworks)"),
            "causal/median_ratio": Tolerance(rel=0.15, reason="test scale: a ratio of mean KL divergences over few "
                                                             "tokens; 15 %"),
        },
        "paper": {
            "reconstruction_error": Tolerance(abs=0.005,
                                              reason=PAPER_ERROR + " (the shipped model: the same on every CPU)"),
            "test_reconstruction_error": Tolerance(abs=0.005, reason=PAPER_ERROR + " (the shipped model)"),
            "dead_fraction": Tolerance(abs=0.02, reason="paper scale: 4 of 200 subnetworks"),
            "causal/median_ratio": Tolerance(rel=0.1, reason="paper scale: the median over about 200 subnetworks of a "
                                                            "ratio of mean KL divergences; 10 %"),
            "causal/random_median_ratio": Tolerance(rel=0.1, reason="paper scale: the same median for random "
                                                                   "directions of the same ranks and norm; 10 %"),
            "mean_pattern_purity": Tolerance(abs=0.02, reason=PAPER_SCORE + " (20 top tokens each)"),
            "patterns_owned": Tolerance(abs=1, reason="paper scale: one pattern more or less at the 0.8 purity line"),
        },
    },
    "06_cnn": {
        "test": {
            "reconstruction_error": Tolerance(abs=0.005, reason=TEST_MODEL_ERROR),
            "test_reconstruction_error": Tolerance(abs=0.005, reason=TEST_MODEL_ERROR),
            "dead_fraction": exact(TEST_COUNT + " (a share of 6 subnetworks)"),
            "resampled/reconstruction_error": Tolerance(abs=0.005, reason=TEST_MODEL_ERROR),
            "resampled/dead_fraction": exact(TEST_COUNT + " (a share of 6 subnetworks)"),
            "revived/reconstruction_error": Tolerance(abs=0.005, reason=TEST_MODEL_ERROR),
            "revived/dead_fraction": exact(TEST_COUNT + " (a share of 6 subnetworks)"),
            "causal/median_ratio": Tolerance(rel=0.15, reason="test scale: a ratio of mean KL divergences over few "
                                                             "images; 15 %"),
        },
        "paper": {
            "reconstruction_error": Tolerance(abs=0.005,
                                              reason=PAPER_ERROR + " (the shipped model: the same on every CPU)"),
            "test_reconstruction_error": Tolerance(abs=0.005, reason=PAPER_ERROR + " (the shipped model)"),
            "dead_fraction": Tolerance(abs=0.05, reason="paper scale: 2 of 40 subnetworks (issue 27, a retrained "
                                                        "model on another CPU: 52.5 % -> 57.5 %)"),
            "mean_class_purity": Tolerance(abs=0.05, reason="paper scale: 8 top images each (issue 27, a retrained "
                                                            "model on another CPU: 0.89 -> 0.93)"),
            "classes_owned": Tolerance(abs=1, reason="paper scale: one digit more or less at the 0.8 purity line"),
            "resampled/reconstruction_error": Tolerance(abs=0.005, reason=PAPER_ERROR + " (the shipped model)"),
            "resampled/dead_fraction": Tolerance(abs=0.05, reason="paper scale: 2 of 40 subnetworks"),
            "revived/reconstruction_error": Tolerance(abs=0.005, reason=PAPER_ERROR + " (the shipped model)"),
            "revived/dead_fraction": Tolerance(abs=0.05, reason="paper scale: 2 of 40 subnetworks"),
            "causal/median_ratio": Tolerance(rel=0.1, reason="paper scale: the median over the live subnetworks of a "
                                                            "ratio of mean KL divergences; 10 %"),
            "causal/random_median_ratio": Tolerance(rel=0.1, reason="paper scale: the same median for random "
                                                                   "directions of the same ranks and norm; 10 %"),
        },
    },
    "08_whole_model": {
        "test": {
            "*/training_error": Tolerance(abs=0.005, reason=TEST_MODEL_ERROR),
            "*/test_error": Tolerance(abs=0.005, reason=TEST_MODEL_ERROR),
            "*/dead_fraction": exact(TEST_COUNT + " (a share of 10 subnetworks)"),
            "causal/*/median_ratio": Tolerance(rel=0.15, reason="test scale: a ratio of mean KL divergences over few "
                                                                "tokens; 15 %"),
        },
        "paper": {
            "*/training_error": Tolerance(abs=0.005,
                                          reason=PAPER_ERROR + " (the shipped model: the same on every CPU)"),
            "*/test_error": Tolerance(abs=0.005, reason=PAPER_ERROR + " (the shipped model)"),
            "*/dead_fraction": Tolerance(abs=0.02, reason="paper scale: 4 of 200 subnetworks"),
            "causal/*/median_ratio": Tolerance(rel=0.25, reason="paper scale: the median over about 200 subnetworks "
                                                                "of a ratio of mean KL divergences; the Xeon's "
                                                                "(AVX-512) and an AMD EPYC's (AVX2, 2026-12-07) "
                                                                "differed by -11 % to +4 %; 25 %"),
            "causal/*/random_median_ratio": Tolerance(rel=0.25, reason="paper scale: the same median for random "
                                                                       "directions of the same ranks and norm; "
                                                                       "Xeon and AMD EPYC differed by +5 % to +16 %; "
                                                                       "25 %"),
        },
    },
    "07_field_benchmarks": {
        "test": {
            "summary/*/median": Tolerance(abs=0.02, reason=TEST_SCORE + " (MMCS)"),
            "summary/*/ml2r_median": Tolerance(abs=0.02, rel=0.15, reason=TEST_RATIO),
            "summary/*/reconstruction_error_median": Tolerance(abs=0.01, rel=0.05, reason=TEST_ERROR),
            "summary/*/success": exact(TEST_COUNT),
            "summary/*/fewest_recovered": exact(TEST_COUNT),
            "chance_mmcs/*": Tolerance(abs=0.005, reason="test scale: the MMCS of seeded random directions"),
            "stability/n_changed": exact(TEST_COUNT + " (the stability check's count of decompositions whose outcome "
                                                      "changed)"),
        },
        "paper": {
            # the untrained networks' controls first (the first matching pattern applies): nothing to recover, so
            # their decompositions follow the floating point
            "summary/* random*/ml2r_median": Tolerance(
                abs=0.1, reason="paper scale, the random networks' controls: no features to converge to, so the "
                                "decomposition follows the floating point; the same loss summed in another order "
                                "(issue 30's batched loss) moved 5-2 random's seed 0 from 0.289 to 0.038 and the "
                                "median over 4 seeds from 0.321 to 0.263; ±0.1"),
            "summary/* random*/reconstruction_error_median": Tolerance(
                abs=0.01, rel=0.15, reason="paper scale, the random networks' controls (errors above 1: nothing is "
                                           "recovered): the same loss summed in another order moved 40-10 random "
                                           "refit's seed 3 from 2.64 to 2.37, the median over 5 seeds with it; 15 %"),
            "summary/*/median": Tolerance(abs=0.005, reason=PAPER_SCORE + " (MMCS of recovered features is near 1)"),
            "summary/*/ml2r_median": Tolerance(rel=0.05, reason="paper scale: a norm ratio; 5 %"),
            "summary/*/success": exact(PAPER_COUNT + "; the stability check changed no TMS decomposition's outcome"),
            "stability/n_changed": exact(PAPER_COUNT),
            "summary/*/reconstruction_error_median": Tolerance(abs=0.01, rel=0.05, reason=PAPER_ERROR),
            "chance_mmcs/*": Tolerance(abs=0.005, reason="paper scale: random directions, seeded"),
        },
    },
}
