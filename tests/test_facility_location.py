"""Facility-location engine: exactness (lazy == naive, bit for bit), agreement with submodlib,
kernels, stochastic greedy, invariants, golden picks and input errors."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from workbench.errors import ConfigError  # noqa: E402
from workbench.selection.facility_location import (  # noqa: E402
    Selection,
    SelectionError,
    evaluate_objective,
    facility_location,
    similarity_kernel,
)


def blobs(n, dim=16, clusters=8, spread=0.5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    labels = rng.integers(0, clusters, size=n)
    return (centres[labels] + spread * rng.standard_normal((n, dim))).astype(np.float32)


def _has_faiss():
    try:
        import faiss  # noqa: F401
    except Exception:
        return False
    return True


def _has_submodlib():
    try:
        import submodlib  # noqa: F401
    except Exception:
        return False
    return True


# ---------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kernel", ["dense", "knn"])
@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_lazy_equals_naive_exactly(seed, kernel, engine):
    # big enough budget that the kernel gets compacted several times along the way
    X = blobs(400, seed=seed)
    kw = dict(kernel=kernel, knn=8, device="cpu", engine=engine)
    naive = facility_location(X, 150, optimizer="naive", **kw)
    lazy = facility_location(X, 150, optimizer="lazy", **kw)
    np.testing.assert_array_equal(lazy.indices, naive.indices)
    np.testing.assert_array_equal(lazy.gains, naive.gains)  # bitwise, not approximately
    assert lazy.objective == naive.objective
    assert lazy.stats["evaluations"] < naive.stats["evaluations"]
    if kernel == "dense":
        assert naive.stats["compactions"] >= 1


def test_lazy_equals_naive_full_ordering_with_ties():
    # budget == n (what INGENIOUS asks for) on data with exact duplicates: many tied gains,
    # all of which must be broken the same way (lowest index first)
    X = blobs(150, seed=3)
    X = np.concatenate([X, X[:40]])  # 40 exact duplicates
    for kernel in ("dense", "knn"):
        naive = facility_location(X, len(X), optimizer="naive", kernel=kernel, knn=6)
        lazy = facility_location(X, len(X), optimizer="lazy", kernel=kernel, knn=6)
        np.testing.assert_array_equal(lazy.indices, naive.indices)
        np.testing.assert_array_equal(lazy.gains, naive.gains)
        assert sorted(lazy.indices.tolist()) == list(range(len(X)))


def test_engines_agree():
    X = blobs(300, seed=4)
    a = facility_location(X, 60, engine="numpy", device="cpu")
    b = facility_location(X, 60, engine="torch", device="cpu")
    # same picks; gains may differ in the last float32 bits (different summation order)
    np.testing.assert_allclose(a.gains, b.gains, rtol=1e-5)
    assert np.mean(a.indices == b.indices) > 0.9
    assert abs(a.objective - b.objective) <= 1e-6 * a.objective


# ------------------------------------------------------------------------------- vs submodlib


@pytest.mark.skipif(not _has_submodlib(), reason="submodlib not installed")
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_matches_submodlib_lazy_greedy(seed, metric):
    X = np.random.default_rng(seed).standard_normal((200, 8)).astype(np.float32)
    ours = facility_location(X, 40, metric=metric)
    ref = facility_location(X, 40, metric=metric, backend="submodlib")
    assert isinstance(ref, Selection) and ref.indices.dtype == np.int64 and ref.gains.dtype == np.float64
    assert abs(ours.objective - ref.objective) <= 1e-6 * ref.objective
    # identical up to ties: where the picks differ, the two candidates had the same gain
    np.testing.assert_allclose(ours.gains, ref.gains, rtol=1e-5, atol=1e-6)
    assert np.mean(ours.indices == ref.indices) >= 0.8
    # and evaluated by one independent float64 evaluator, the two sets are worth the same
    assert evaluate_objective(X, ours.indices, metric) == pytest.approx(
        evaluate_objective(X, ref.indices, metric), rel=1e-6)


@pytest.mark.skipif(not _has_submodlib(), reason="submodlib not installed")
def test_matches_submodlib_sparse_mode():
    X = blobs(300, seed=5)
    ours = facility_location(X, 60, kernel="knn", knn=8)
    ref = facility_location(X, 60, kernel="knn", knn=8, backend="submodlib")
    assert abs(ours.objective - ref.objective) <= 1e-6 * ref.objective
    np.testing.assert_allclose(ours.gains, ref.gains, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ kernels


def test_dense_kernel_is_cosine():
    X = blobs(50, seed=6)
    X[7] = 0.0  # an all-zero row: similarity 0 to the others, 1 to itself
    M = similarity_kernel(X)
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    ref = (X @ X.T) / np.outer(safe, safe)
    np.fill_diagonal(ref, 1.0)
    np.testing.assert_allclose(M, ref, atol=1e-6)
    assert M[7, 7] == 1.0 and np.all(M[7, np.arange(50) != 7] == 0)


@pytest.mark.parametrize("backend", ["torch", pytest.param("faiss", marks=pytest.mark.skipif(
    not _has_faiss(), reason="faiss not installed"))])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_kernel_is_dense_restricted_to_neighbours(backend, metric):
    X = blobs(120, seed=7)
    k = 6
    D = similarity_kernel(X, metric=metric)
    S = similarity_kernel(X, metric=metric, kernel="knn", knn=k, knn_backend=backend).toarray()
    # each point's k most similar points (itself first), then the union of both directions
    nbrs = np.argsort(-D, axis=1, kind="stable")[:, :k]
    keep = np.zeros_like(D, dtype=bool)
    keep[np.repeat(np.arange(len(X)), k), nbrs.ravel()] = True
    keep |= keep.T
    np.testing.assert_array_equal(S != 0, keep)
    np.testing.assert_allclose(S, np.where(keep, D, 0.0), atol=1e-5)


def test_knn_backends_agree():
    if not _has_faiss():
        pytest.skip("faiss not installed")
    X = blobs(200, seed=8)
    a = facility_location(X, 40, kernel="knn", knn=8, knn_backend="faiss")
    b = facility_location(X, 40, kernel="knn", knn=8, knn_backend="torch")
    np.testing.assert_allclose(a.gains, b.gains, rtol=1e-5)
    assert abs(a.objective - b.objective) <= 1e-5 * a.objective


def test_memory_refusal_mentions_knn():
    X = blobs(300, seed=9)
    with pytest.raises(SelectionError, match="knn"):
        facility_location(X, 10, kernel="dense", memory_limit_gb=1e-4)
    # the sparse kernel is the suggested way out and fits
    assert len(facility_location(X, 10, kernel="knn", memory_limit_gb=1e-2).indices) == 10


# -------------------------------------------------------------------- stochastic and invariants


def test_stochastic_is_close_and_seeded():
    X = blobs(500, seed=10)
    exact = facility_location(X, 50, optimizer="naive")
    a = facility_location(X, 50, optimizer="stochastic", seed=1)
    b = facility_location(X, 50, optimizer="stochastic", seed=1)
    c = facility_location(X, 50, optimizer="stochastic", seed=2)
    assert a.objective >= 0.95 * exact.objective
    assert c.objective >= 0.95 * exact.objective
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.gains, b.gains)
    assert not np.array_equal(a.indices, c.indices)
    assert a.stats["evaluations"] < exact.stats["evaluations"] / 5


@pytest.mark.parametrize("kernel", ["dense", "knn"])
@pytest.mark.parametrize("optimizer", ["naive", "lazy", "stochastic"])
def test_gains_non_increasing_and_sum_to_objective(kernel, optimizer):
    X = blobs(300, seed=11)
    s = facility_location(X, 100, kernel=kernel, knn=8, optimizer=optimizer)
    assert s.indices.dtype == np.int64 and s.gains.dtype == np.float64
    assert len(set(s.indices.tolist())) == 100
    assert np.all(s.gains >= 0)
    assert s.gains.sum() == pytest.approx(s.objective, rel=1e-5)
    if optimizer != "stochastic":  # (stochastic picks the best of a sample: no such guarantee)
        # submodularity; float32 rounding may differ by an ulp when the kernel is compacted
        assert np.all(np.diff(s.gains) <= 1e-6 * s.gains[0])
    if kernel == "dense":
        assert s.objective == pytest.approx(evaluate_objective(X, s.indices), rel=1e-6)


def _exact_points(n, dim=12, nnz=4, seed=0):
    """Rows with ``nnz`` entries of +-1, the rest 0: every cosine (unit rows have entries +-1/2)
    and euclidean similarity is exact in float32, so exact duplicates share their similarities
    bit for bit (on generic float data the copy's gain is a float32 rounding residue instead)."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, dim), dtype=np.float32)
    for row in X:
        row[rng.choice(dim, nnz, replace=False)] = rng.choice([-1.0, 1.0], nnz)
    return X


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("optimizer", ["naive", "lazy", "stochastic"])
@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_duplicates_get_zero_gain(metric, optimizer, engine):
    # dense kernel only: in the k-NN kernel two copies may keep different neighbours (exact ties)
    X = _exact_points(120)
    X = np.concatenate([X, X[::4]])  # 30 exact duplicates (plus any the draw made itself)
    group = np.unique(X, axis=0, return_inverse=True)[1].reshape(-1)
    s = facility_location(X, len(X), metric=metric, optimizer=optimizer, engine=engine, device="cpu")
    assert sorted(s.indices.tolist()) == list(range(len(X)))
    seen, later = set(), []  # steps that picked a point whose twin was already selected
    for step, c in enumerate(s.indices.tolist()):
        if group[c] in seen:
            later.append(step)
        seen.add(group[c])
    assert len(later) >= 30
    assert np.all(s.gains[later] == 0.0)
    # the same marginal gain, f(S + copy) - f(S), from the independent float64 evaluator
    for step in later[:5]:
        assert evaluate_objective(X, s.indices[: step + 1], metric) == evaluate_objective(
            X, s.indices[:step], metric)


def test_progress_bar_only_when_asked(capsys):
    X = blobs(400, seed=12)
    quiet = facility_location(X, 40, progress=False)
    assert capsys.readouterr().err == ""
    loud = facility_location(X, 40, progress=True)
    err = capsys.readouterr().err
    assert "40/40" in err                                     # tqdm's bar reached the budget
    assert loud.indices.tolist() == quiet.indices.tolist()    # the bar changes nothing else


# ---------------------------------------------------------------------------------- golden


def test_golden_first_picks():
    X = blobs(500, dim=16, clusters=8, spread=0.5, seed=123)
    s = facility_location(X, 50)
    assert s.indices[:5].tolist() == [289, 222, 34, 306, 158]
    np.testing.assert_allclose(s.gains[:3], [162.8603973388672, 104.93366241455078, 32.28470230102539],
                               rtol=1e-5)
    assert s.objective == pytest.approx(448.7452601790428, rel=1e-6)
    e = facility_location(X, 50, metric="euclidean")
    assert e.indices[:5].tolist() == [314, 289, 34, 37, 415]
    k = facility_location(X, 50, kernel="knn", knn=8)
    assert k.indices[:5].tolist() == [306, 37, 34, 416, 418]


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("budget", [0, -3, 101, 2.5, True])
def test_bad_budget(budget):
    with pytest.raises(SelectionError):
        facility_location(blobs(100), budget)


def test_bad_inputs():
    X = blobs(50)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(SelectionError, match="NaN"):
        facility_location(bad, 5)
    bad[3, 2] = np.inf
    with pytest.raises(SelectionError, match="NaN or infinite"):
        facility_location(bad, 5)
    for shape_bad in (X[0], X[None], np.zeros((0, 4)), np.zeros((5, 0)), [[1.0, 2.0], [3.0]]):
        with pytest.raises(SelectionError):
            facility_location(shape_bad, 1)
    with pytest.raises(SelectionError):
        facility_location(X, 5, metric="manhattan")
    with pytest.raises(SelectionError):
        facility_location(X, 5, kernel="sparse")
    with pytest.raises(SelectionError):
        facility_location(X, 5, optimizer="fast")
    with pytest.raises(SelectionError):
        facility_location(X, 5, kernel="knn", knn=0)
    with pytest.raises(SelectionError):
        facility_location(X, 5, kernel="knn", knn=51)
    with pytest.raises(SelectionError):
        facility_location(X, 5, optimizer="stochastic", epsilon=0.0)
    with pytest.raises(SelectionError):
        facility_location(X, 5, backend="apricot")
    assert issubclass(SelectionError, ValueError)


def test_bad_params_raise_selection_error():
    # each bad parameter raises the library's error, naming the parameter it refuses
    X = blobs(60)
    for kw, name in [
        (dict(engine="gpu"), "engine"),
        (dict(kernel="knn", knn_backend="annoy"), "knn_backend"),
        (dict(device="not-a-device"), "device"),
        (dict(memory_limit_gb=0), "memory_limit_gb"),
        (dict(memory_limit_gb=-1.0), "memory_limit_gb"),
        (dict(optimizer="stochastic", epsilon=1.0), "epsilon"),
        (dict(kernel="knn", knn=True), "knn"),
        (dict(kernel="knn", knn=2.5), "knn"),
    ]:
        with pytest.raises(SelectionError, match=name):
            facility_location(X, 5, **kw)
    for kw, name in [(dict(metric="manhattan"), "metric"), (dict(kernel="sparse"), "kernel"),
                     (dict(kernel="knn", knn=0), "knn"), (dict(kernel="knn", knn=61), "knn")]:
        with pytest.raises(SelectionError, match=name):
            similarity_kernel(X, **kw)
    with pytest.raises(SelectionError, match="metric"):
        evaluate_objective(X, [0, 1], metric="manhattan")
    assert issubclass(SelectionError, ConfigError)


@pytest.mark.parametrize("kernel", ["dense", "knn"])
def test_constant_and_zero_data(kernel):
    # documented behaviour: identical rows are fine (cosine 1 everywhere); the first pick
    # serves everything, every later gain is 0 and ties go to the lowest index
    X = np.ones((30, 4), dtype=np.float32)
    s = facility_location(X, 5, kernel=kernel, knn=4)
    if kernel == "dense":
        assert s.indices.tolist() == [0, 1, 2, 3, 4]
        assert s.gains[0] == pytest.approx(30.0) and np.all(s.gains[1:] == 0)
    else:  # which equally-near points make a k-NN list is arbitrary among exact ties
        assert len(set(s.indices.tolist())) == 5 and np.all(s.gains >= 0)
        assert s.gains.sum() == pytest.approx(s.objective) and s.objective <= 30.0 + 1e-4
    # all-zero rows: no division by zero, sim(i, i) = 1 and 0 otherwise -> every gain is 1
    Z = np.zeros((20, 4), dtype=np.float32)
    z = facility_location(Z, 5, kernel=kernel, knn=3)
    assert z.indices.tolist() == [0, 1, 2, 3, 4] and np.all(z.gains == 1.0)
    assert np.isfinite(z.objective) and z.objective == 5.0


# ---------------------------------------------------------------------------------- bench fl


@pytest.mark.skipif(not _has_submodlib(), reason="submodlib not installed")
def test_bench_fl_peers_json(capsys):
    import json

    from workbench.cli import main

    rc = main(["bench", "fl", "--n", "300", "--dim", "16", "--budget", "40", "--clusters", "8",
               "--device", "cpu", "--json"])
    assert rc == 0
    lines = [ln for ln in capsys.readouterr().out.strip().splitlines() if ln.strip()]
    r = json.loads(lines[-1])
    for key in ("workbench_cpu_s", "workbench_wall_s", "submodlib_fast_cpu_s", "submodlib_data_cpu_s", "apricot_cpu_s",
                "gemm_bound_s", "objective_ratio", "load_avg", "speedup_vs_strongest", "strongest_peer", "headline"):
        assert key in r, key
    assert r["interleaved"] is True and r["threads"] == 1
    assert r["workbench_cpu_s"] > 0 and r["gemm_bound_s"] > 0 and r["submodlib_fast_cpu_s"] > 0
    assert r["submodlib_data_cpu_s"] > 0
    objs = [r["workbench_objective"], r["submodlib_fast_objective"], r["submodlib_data_objective"]]
    try:
        import apricot  # noqa: F401
        assert r["apricot_cpu_s"] > 0
        objs.append(r["apricot_objective"])
    except ImportError:
        assert r["apricot_cpu_s"] is None and "apricot-select is not installed" in r["note"]
    # the same greedy on the same objective: the same (or nearly the same) value, one evaluator
    assert max(objs) - min(objs) <= 1e-4 * max(objs), objs
    assert abs(r["objective_ratio"] - 1.0) <= 1e-4
    import re

    assert re.search(r"load avg \d+(\.\d+)?\)", r["headline"]), r["headline"]
    assert r["strongest_peer"] in ("submodlib_fast", "apricot", "submodlib_data")


def test_fused_gains_match_numpy_bits(monkeypatch):
    # the numba kernels must give the numpy code's exact bits (the selections depend on them)
    from workbench.selection.facility_location import engines

    X = blobs(300, seed=6)
    fused = facility_location(X, 120, kernel="dense", device="cpu", engine="numpy")
    knn_fused = facility_location(X, 120, kernel="knn", knn=8, device="cpu", engine="numpy")
    monkeypatch.setattr(engines, "_FUSED", [None])
    plain = facility_location(X, 120, kernel="dense", device="cpu", engine="numpy")
    knn_plain = facility_location(X, 120, kernel="knn", knn=8, device="cpu", engine="numpy")
    np.testing.assert_array_equal(fused.indices, plain.indices)
    np.testing.assert_array_equal(fused.gains, plain.gains)
    np.testing.assert_array_equal(knn_fused.indices, knn_plain.indices)
    np.testing.assert_array_equal(knn_fused.gains, knn_plain.gains)
    # the compiled compaction (count, then pack in place) ran, and left the same kernel behind
    assert fused.stats["compactions"] >= 1 and fused.stats["compactions"] == plain.stats["compactions"]
    assert knn_fused.stats["compactions"] == knn_plain.stats["compactions"]
