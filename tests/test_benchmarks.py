"""The claims of the benchmarks, checked at a small size."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import strongly_convex  # noqa: E402
from distributed import Client  # noqa: E402


def test_adadamp_needs_few_updates_and_few_examples(new_cluster):
    """Least squares with an exact F*: AdaDamp reaches eps within 2x the
    model updates of gradient descent and 2x the gradient examples of SGD
    (medians over four seeded problems), each schedule at the rate it chose
    on a fifth problem that is not among them."""
    # In-process workers: the claim is about updates and examples, which do
    # not depend on where the workers run (about half the time of processes).
    with Client(new_cluster(2)) as client:
        result = strongly_convex.run(quick=True, client=client,
                                     names=("SGD", "GD", "AdaDamp"))
    assert strongly_convex.TUNE_SEED not in result["problem"]["seeds"]
    assert all(r["reached"] for r in result["rows"])
    assert result["updates_vs_gd"] <= 2
    assert result["examples_vs_sgd"] <= 2
    # The loss evaluations read the whole training set before every update.
    adadamp = [r for r in result["rows"] if r["schedule"] == "AdaDamp"]
    assert all(r["loss_examples"] >= r["updates"] * result["problem"]["n"]
               for r in adadamp)
