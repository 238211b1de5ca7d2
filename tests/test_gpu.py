"""device="cuda": workers compute on their GPU (runs where there is one)."""
import pytest
import torch

from conftest import make_classifier, weights

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device")


def test_cuda_workers_match_cpu_workers(client, digits_data):
    X, _, y, _ = digits_data
    cpu = make_classifier(max_epochs=2).fit(X, y)
    gpu = make_classifier(max_epochs=2, device="cuda").fit(X, y)
    assert gpu.history[-1, "n_workers"] == 2
    # Different kernels: equal to float32 tolerance, not bit for bit.
    torch.testing.assert_close(weights(gpu).cpu(), weights(cpu), rtol=1e-4, atol=1e-5)
    assert gpu.score(X, y) == pytest.approx(cpu.score(X, y), abs=0.01)
