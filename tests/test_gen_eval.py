"""The evaluation classifier and the metrics on generated images: Frechet distance math, helpers, loader."""

import numpy as np
import pytest
import torch

import weights
from models.evalnet import EvalNet, EvalNetConfig
from training.gen_eval import class_consistency, confidence_histogram, frechet_distance


def test_fd_zero_for_identical_sets():
    x = torch.randn(500, 8, dtype=torch.float64) @ torch.randn(8, 8, dtype=torch.float64)
    assert abs(frechet_distance(x, x.clone())) < 1e-6


def test_fd_matches_closed_form_for_gaussians():
    # Sample statistics enter the formula exactly, so compare against it evaluated on those statistics.
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    b = torch.randn(4000, 3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 1.0], dtype=torch.float64) + 1.0
    # Diagonal population covariances: FD = |mu1-mu2|^2 + sum (s1 - s2)^2 over standard deviations
    expected = 3 * 1.0 + (1 - 3) ** 2 + (2 - 1) ** 2 + (0.5 - 1) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.05)


def test_fd_closed_form_with_full_covariances():
    # For commuting covariances S1 = Q diag(l1) Q^T, S2 = Q diag(l2) Q^T: tr sqrt(S1 S2) = sum sqrt(l1 l2).
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    l1, l2 = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64), torch.tensor([4.0, 1.0, 0.5, 2.0], dtype=torch.float64)
    n = 20000
    g = torch.Generator().manual_seed(2)
    a = (torch.randn(n, 4, generator=g, dtype=torch.float64) * l1.sqrt()) @ q.T
    b = (torch.randn(n, 4, generator=g, dtype=torch.float64) * l2.sqrt()) @ q.T
    expected = float(l1.sum() + l2.sum() - 2 * (l1 * l2).sqrt().sum())
    assert frechet_distance(a, b) == pytest.approx(expected, abs=0.15)


def test_fd_is_symmetric_and_rejects_bad_shapes():
    a, b = torch.randn(200, 5), torch.randn(300, 5) + 0.3
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(a, torch.randn(10, 4))


def test_evalnet_shapes_and_metrics():
    net = EvalNet(EvalNetConfig(widths=[4, 8, 8], feature_dim=16)).eval()
    for shape in [(3, 1, 28, 28), (3, 3, 32, 32), (3, 1, 32, 32)]:
        x = torch.rand(shape) * 2 - 1
        assert net(x).shape == (3, 10)
        assert net.features(x).shape == (3, 16)
    rgb = EvalNet(EvalNetConfig(in_channels=3, widths=[4, 8], feature_dim=8)).eval()
    assert rgb(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    x = torch.rand(20, 1, 28, 28) * 2 - 1
    labels = net(x).argmax(1)
    assert class_consistency(x, labels, net) == 1.0
    hist = confidence_histogram(x, net, bins=5)
    assert len(hist) == 5 and sum(hist) == 20


def test_fashion_loader():
    from training.fashion import CLASSES, DEFAULT_ROOT, load_fashion
    assert len(CLASSES) == 10
    if not (DEFAULT_ROOT / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed")
    images, labels = load_fashion("test")
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.bincount().tolist() == [1000] * 10
    with pytest.raises(ValueError):
        load_fashion("validation")


def test_fashion_loader_explicit_missing_root(tmp_path):
    from training.fashion import load_fashion
    with pytest.raises(FileNotFoundError, match="lacks"):
        load_fashion("train", tmp_path)


@pytest.mark.parametrize("dataset,floor", [("fashion", 0.9), ("cifar10", 0.8)])
def test_released_evaluator_is_accurate(dataset, floor):
    if not weights.available(f"evalnet-{dataset}"):
        pytest.skip(f"evalnet-{dataset} not trained")
    from training.gen_eval import load_dataset, load_evaluator, to_signed
    try:
        images, labels = load_dataset(dataset, "test")
    except (OSError, ValueError):
        pytest.skip(f"the {dataset} test set is not installed")
    evaluator = load_evaluator(dataset)
    acc = class_consistency(to_signed(images[:2000]), labels[:2000], evaluator)
    assert floor < acc <= 1.0


# --------------------------------------------------------------------------- found a surviving mutation

def test_fd_with_covariances_that_do_not_commute_matches_the_general_formula():
    """tr((S1 S2)^1/2) is not tr(S1^1/2 S2^1/2) unless S1 and S2 commute (every other FD test's case)."""
    from training.gen_eval import frechet_distance
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 3, generator=g, dtype=torch.float64) @ torch.tensor([[2.0, 0, 0], [1.5, 0.5, 0], [0, 0, 1]],
                                                                               dtype=torch.float64)
    b = torch.randn(2000, 3, generator=g, dtype=torch.float64) @ torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, -1.8, 0.3]],
                                                                               dtype=torch.float64) + 0.5
    s1, s2 = np.cov(a.numpy().T), np.cov(b.numpy().T)
    mu = (a.mean(0) - b.mean(0)).numpy()
    # tr((S1 S2)^1/2) from the general (non-symmetric) eigenvalues of S1 S2, as scipy's sqrtm would give
    cross = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum()
    expected = mu @ mu + np.trace(s1) + np.trace(s2) - 2 * cross
    assert not np.allclose(s1 @ s2, s2 @ s1)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
