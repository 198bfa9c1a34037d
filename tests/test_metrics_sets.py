"""Set metrics (FID, KID, GMM-/KNN-GIQA) against independent computations, on the features of a random-weight
FID Inception (CPU, a few small images), plus the feature cache and the weights loading."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ddpg.api.evaluation import FeatureSource, evaluate
from ddpg.errors import ConfigError
from ddpg.metrics import fid, fit_giqa_gmm, kid, knn_giqa
from ddpg.metrics.features import FeatureExtractor
from ddpg.metrics.inception import INCEPTION_URL, load_inception
from metric_oracles import random_inception

scipy_linalg = pytest.importorskip("scipy.linalg")
sklearn_mixture = pytest.importorskip("sklearn.mixture")
sklearn_decomposition = pytest.importorskip("sklearn.decomposition")

N_REF, N_PRED, SIZE = 10, 6, 32


@pytest.fixture(scope="module")
def net():
    return random_inception()


def smooth_image(rng: np.random.Generator) -> np.ndarray:
    """An 8-bit RGB image: a random colour gradient plus noise (images differ enough for distinct features)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    base = rng.uniform(0, 1, (3, 3))
    img = base[:, 0, None, None] + base[:, 1, None, None] * xx + base[:, 2, None, None] * yy
    img = img.transpose(1, 2, 0) / 2 + rng.normal(0, 0.05, (SIZE, SIZE, 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    rng = np.random.default_rng(1)
    (root / "gt").mkdir()
    (root / "pred").mkdir()
    for i in range(N_REF):
        Image.fromarray(smooth_image(rng)).save(root / "gt" / f"im{i}.png")
    for i in range(N_PRED):  # predictions of the first N_PRED references: the reference plus noise
        ref = np.asarray(Image.open(root / "gt" / f"im{i}.png")).astype(float)
        noisy = np.clip(ref + rng.normal(0, 20, ref.shape), 0, 255).round().astype(np.uint8)
        Image.fromarray(noisy).save(root / "pred" / f"im{i}_restored.png")
    return root


@pytest.fixture(scope="module")
def feats(net, folders, tmp_path_factory):
    """(extractor, reference features (N_REF, 2048), prediction features (N_PRED, 2048))."""
    extractor = FeatureExtractor(net, "random-test-weights", tmp_path_factory.mktemp("cache"))
    ref = extractor.features(sorted((folders / "gt").glob("*.png")))
    pred = extractor.features([folders / "pred" / f"im{i}_restored.png" for i in range(N_PRED)])
    return extractor, ref, pred


def test_features_are_cached_by_content(feats, folders, tmp_path):
    extractor, ref, _ = feats
    assert ref.shape == (N_REF, 2048) and extractor.computed == N_REF + N_PRED
    assert np.std(ref, axis=0).mean() > 1e-4  # the random network tells the images apart
    copy = tmp_path / "renamed.png"  # same bytes under another name: served from the cache
    copy.write_bytes((folders / "gt" / "im3.png").read_bytes())
    again = extractor.features([copy, folders / "gt" / "im0.png"])
    assert extractor.computed == N_REF + N_PRED
    np.testing.assert_array_equal(again, ref[[3, 0]])
    other = FeatureExtractor(extractor.network, "other-weights", extractor.folder.parent)
    other.features([copy])
    assert other.computed == 1  # other weights never reuse these features
    assert not list(extractor.folder.glob("*.part"))


def fid_scipy(x: np.ndarray, y: np.ndarray) -> float:
    """pytorch-fid's formula: scipy's sqrtm of Σ₁Σ₂, its real part."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy_linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # sqrtm of a singular Σ₁Σ₂
def test_fid_matches_scipy_sqrtm(feats):
    _, ref, pred = feats
    rng = np.random.default_rng(0)  # full-rank covariances too: 300 samples in 16 dimensions
    a = rng.normal(size=(300, 16))
    b = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16)) * 0.5 + 1
    assert fid(a, b) == pytest.approx(fid_scipy(a, b), rel=1e-8)
    assert fid(a[:10], b[:12]) == pytest.approx(fid_scipy(a[:10], b[:12]), rel=1e-6)  # fewer images than dims
    # Inception features of a few images (singular covariances); 128 dims keep scipy's sqrtm accurate
    x, y = pred[:, :128], ref[:, :128]
    assert fid(x, y) == pytest.approx(fid_scipy(x, y), rel=1e-5)
    assert fid(ref, ref) == pytest.approx(0, abs=1e-5 * np.trace(np.cov(ref, rowvar=False)))  # round-off only


def kid_by_loops(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² with k(a, b) = (aᵀb / d + 1)³, written out pair by pair."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1) ** 3

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_kid_matches_the_unbiased_polynomial_mmd(feats):
    _, ref, pred = feats
    value, std = kid(pred, ref)  # unequal sizes, whole sets
    assert std == 0.0
    assert value == pytest.approx(kid_by_loops(pred, ref), rel=1e-9, abs=1e-12)
    # subsets when the sets are larger than subset_size: the mean of per-subset unbiased estimates
    sub_mean, sub_std = kid(ref, pred, subset_size=4, subsets=5, seed=3)
    rng = np.random.default_rng(3)
    expected = [kid_by_loops(ref[rng.choice(N_REF, 4, replace=False)], pred[rng.choice(N_PRED, 4, replace=False)])
                for _ in range(5)]
    assert sub_mean == pytest.approx(np.mean(expected), rel=1e-9)
    assert sub_std == pytest.approx(np.std(expected), rel=1e-6)


def test_gmm_giqa_matches_sklearn_score_samples(feats):
    _, ref, pred = feats
    model = fit_giqa_gmm(ref, components=2, pca=3, seed=0)
    pca = sklearn_decomposition.PCA(n_components=3, svd_solver="full").fit(ref)
    gmm = sklearn_mixture.GaussianMixture(n_components=2, covariance_type="full", random_state=0)
    gmm.fit(pca.transform(ref))
    np.testing.assert_allclose(model.score_samples(pred), gmm.score_samples(pca.transform(pred)), rtol=1e-7)
    np.testing.assert_allclose(model.score_samples(ref), gmm.score_samples(pca.transform(ref)), rtol=1e-7)
    # without PCA, on features of few dimensions
    rng = np.random.default_rng(2)
    low = rng.normal(size=(60, 4))
    model = fit_giqa_gmm(low, components=3)
    gmm = sklearn_mixture.GaussianMixture(n_components=3, covariance_type="full", random_state=0).fit(low)
    np.testing.assert_allclose(model.score_samples(low[:7] + 0.3), gmm.score_samples(low[:7] + 0.3), rtol=1e-7)
    with pytest.raises(ConfigError, match="needs >= 10"):
        fit_giqa_gmm(ref[:9], components=2, pca=4)


def test_knn_giqa_matches_brute_force(feats):
    _, ref, pred = feats
    for k in (1, 3):
        expected = []
        for x in pred:
            dists = sorted(float(np.sum(np.abs(x - r))) for r in ref)
            expected.append(sum(1 / d for d in dists[:k]))
        np.testing.assert_allclose(knn_giqa(pred, ref, k), expected, rtol=1e-12)
    with pytest.raises(ConfigError, match="K = 11"):
        knn_giqa(pred, ref, 11)


def test_evaluate_reports_set_metrics(net, feats, folders, tmp_path):
    extractor, ref, pred = feats
    source = FeatureSource(network=net, weights_id="random-test-weights", cache=extractor.folder.parent)
    report = evaluate(folders / "pred", folders / "gt", tmp_path / "out", labels=["noisy"], features=source,
                      images=[f"im{i}" for i in range(N_PRED)], fid_min_images=2, giqa_components=1, giqa_pca=3)
    assert source.extractor().computed == 0  # every feature came from the cache filled above
    entry = report.extra["summary"]["methods"]["noisy"]
    refs = ref[:N_PRED]  # the references are the ground truth of the evaluated images
    assert entry["images"] == N_PRED
    assert entry["fid"] == pytest.approx(fid(pred, refs), rel=1e-9)  # the pairing (maths: tests above)
    assert entry["kid"] == pytest.approx(kid_by_loops(pred, refs), rel=1e-9, abs=1e-12)
    gmm = fit_giqa_gmm(refs, components=1, pca=3)
    rows = list(csv.DictReader((tmp_path / "out" / "metrics.csv").open()))
    np.testing.assert_allclose([float(r["gmm_giqa"]) for r in rows], gmm.score_samples(pred), rtol=1e-6)
    assert entry["gmm_giqa"] == pytest.approx(gmm.score_samples(pred).mean(), rel=1e-6)
    assert entry["knn_giqa"] == pytest.approx(knn_giqa(pred, refs).mean(), rel=1e-9)
    table = (tmp_path / "out" / "summary.md").read_text()
    assert f"| {entry['kid'] * 1e3:.2f} |" in table
    # the default threshold: FID is not printed for 6 images, and the table says why
    report = evaluate(folders / "pred", folders / "gt", tmp_path / "out2", features=source,
                      images=[f"im{i}" for i in range(N_PRED)], giqa_components=1, giqa_pca=3)
    summary = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert next(iter(summary["methods"].values()))["fid"] is None
    assert any("FID not reported" in n and "2048" in n for n in summary["notes"])


def test_without_inception_weights_the_other_metrics_still_run(folders, tmp_path):
    missing = tmp_path / "nowhere" / "pt_inception.pth"
    report = evaluate(folders / "pred", folders / "gt", tmp_path / "out", inception=missing,
                      images=[f"im{i}" for i in range(N_PRED)])
    summary = report.extra["summary"]
    entry = next(iter(summary["methods"].values()))
    assert entry["psnr"] > 10 and entry["kid"] is None and entry["fid"] is None
    assert any(str(missing) in n and INCEPTION_URL in n for n in summary["notes"])
    assert INCEPTION_URL in (tmp_path / "out" / "summary.md").read_text()


def test_load_inception_files(net, tmp_path):
    with pytest.raises(ConfigError, match="pytorch-fid/releases"):
        load_inception(tmp_path / "missing.pth")
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["fc.weight"] = torch.zeros(1008, 2048)  # the classifier of the real file is ignored
    torch.save(state, tmp_path / "w.pth")
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "w.safetensors"))
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = net(x)
        for name in ("w.pth", "w.safetensors"):
            loaded, ident = load_inception(tmp_path / name)
            assert len(ident) == 64
            torch.testing.assert_close(loaded(x), expected)
    del state["Mixed_7c.branch_pool.conv.weight"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="not the FID Inception weights"):
        load_inception(tmp_path / "bad.pth")
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pth")  # a pickled module: refused
    with pytest.raises(ConfigError, match="cannot read Inception weights"):
        load_inception(tmp_path / "pickled.pth")


def test_cli_evaluate_with_an_inception_file_caches_features(net, feats, folders, tmp_path, monkeypatch):
    """`ddpg evaluate --inception FILE`: the set metrics from that file's network, features cached under the ddpg
    cache keyed by the file's sha256; a second run computes nothing."""
    from typer.testing import CliRunner

    from ddpg.cli.main import app

    _, ref, pred = feats
    torch.save(net.state_dict(), tmp_path / "w.pth")
    monkeypatch.setenv("DDPG_HOME", str(tmp_path / "home"))
    args = ["evaluate", "--pred", str(folders / "pred"), "--gt", str(folders / "gt"), "--inception",
            str(tmp_path / "w.pth"), "--giqa-components", "1", "--giqa-pca", "3", "-q"]
    for run in range(2):
        res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / f"out{run}")])
        assert res.exit_code == 1, res.output  # im6..im9 have no prediction: named, the rest evaluated
        summary = json.loads((tmp_path / f"out{run}" / "summary.json").read_text())
        assert summary["methods"]["pred"]["kid"] == pytest.approx(kid(pred, ref[:N_PRED])[0], rel=1e-6)
        cached = list((tmp_path / "home" / "inception_features").glob("*/*.npy"))
        assert len(cached) == N_PRED * 2  # the evaluated predictions and their references, once each
        if run == 0:
            stamps = {p: p.stat().st_mtime_ns for p in cached}
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps  # the second run only read the cache
