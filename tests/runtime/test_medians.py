"""The library's two medians (issue 29): `median` (the mean of the two middle values for an even count) and
`lower_median` (the smaller of them, torch's), each in one place, and the numbers that use them unchanged."""
import statistics

import torch

from l3d.experiments.causal import summarize
from l3d.experiments.field.metrics import median_min_success
from l3d.runtime.medians import lower_median, median


def test_median_is_the_mean_of_the_middle_two_and_lower_median_the_smaller():
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([4.0, 1.0, 3.0, 2.0]) == 2.5
    even = torch.tensor([4.0, 1.0, 3.0, 2.0], dtype=torch.float64)
    assert lower_median(even).item() == 2.0 and lower_median(even[:3]).item() == 3.0
    rows = torch.tensor([[1.0, 8.0], [4.0, 6.0], [2.0, 5.0], [3.0, 7.0]])
    assert lower_median(rows, 0).tolist() == [2.0, 6.0]
    values = torch.rand(10, generator=torch.Generator().manual_seed(0), dtype=torch.float64).tolist()
    assert median(values) == statistics.median(values)
    assert lower_median(torch.tensor(values)).item() == torch.tensor(values).median().item()


def test_the_field_summary_is_the_hand_written_median_it_was():
    for n in (3, 4):
        rows = [{"mmcs": 0.9 + 0.013 * ((7 * s) % n), "ml2r": 1.0 + 0.1 * s, "all_recovered": s % 2 == 0}
                for s in range(n)]
        values, ml2r = sorted(r["mmcs"] for r in rows), sorted(r["ml2r"] for r in rows)

        def by_hand(v, n=n):
            return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2

        assert median_min_success(rows) == {"median": by_hand(values), "min": values[0], "max": values[-1],
                                            "ml2r_median": by_hand(ml2r), "ml2r_min": ml2r[0], "ml2r_max": ml2r[-1],
                                            "success": (n + 1) // 2, "seeds": n}


def test_the_causal_medians_stay_lower_medians_over_an_even_count():
    lists = {"subnetworks": [0, 1, 2, 3], "ratio": [4.0, 1.0, 3.0, 2.0], "random_ratio": [1.0, 1.0, 2.0, 2.0],
             "top_divergence": [0.4, 0.1, 0.3, 0.2], "other_divergence": [0.1] * 4,
             "random_top_divergence": [0.2] * 4, "random_other_divergence": [0.2] * 4,
             "ratio_per_delta": [[4.0, 4.0], [1.0, 1.0], [3.0, 3.0], [2.0, 2.0]],
             "random_ratio_per_delta": [[1.0, 1.0]] * 4}
    s = summarize(lists, [-0.1, 0.1], 2.0, 10)
    assert s["median_ratio"] == 2.0 and s["random_median_ratio"] == 1.0 and s["median_over_random"] == 2.0
    assert s["median_top_divergence"] == 0.2 and s["median_ratio_per_delta"] == [2.0, 2.0]
