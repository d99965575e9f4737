import numpy as np
import pytest

from benchbox.data.splitters import Protocol as ProtocolValue
from benchbox.data.splitters import train_test_indices
from benchbox.errors import BenchboxError
from benchbox_splits import CrossDataset, Holdout, KFold

STRATEGIES = {s.name: s for s in (KFold(), Holdout(), CrossDataset())}


def Protocol(kind="kfold", **options):
    """A protocol value as a suite's [protocol] table makes it (the first-party strategies, defaults merged)."""
    strategy = STRATEGIES[kind]
    return ProtocolValue(kind, {**strategy.defaults, **options}, strategy)


def assign_folds(protocol, labels, groups, seed):
    return protocol.assign(labels, groups, np.zeros(len(labels)), seed)


def data(n_patients=40, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_patients), rng.integers(1, 5, n_patients))
    patient_label = rng.integers(0, 3, n_patients)
    return patient_label[groups], groups


@pytest.mark.parametrize("grouped", [False, True])
def test_every_sample_in_exactly_one_test_fold(grouped):
    labels, groups = data()
    folds = assign_folds(Protocol(k=5, grouped=grouped), labels, groups, seed=1)
    assert set(folds) == set(range(5))
    for f in range(5):
        train, test = train_test_indices(folds, f)
        assert len(set(train) & set(test)) == 0 and len(train) + len(test) == len(labels)


def test_grouped_folds_never_split_a_patient():
    labels, groups = data()
    folds = assign_folds(Protocol(k=5, grouped=True), labels, groups, seed=1)
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1


def test_ungrouped_folds_do_split_patients_so_the_option_matters():
    labels, groups = data()
    folds = assign_folds(Protocol(k=5, grouped=False), labels, groups, seed=1)
    assert any(len(set(folds[groups == g])) > 1 for g in np.unique(groups))


def test_stratification_keeps_class_proportions():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    folds = assign_folds(Protocol(k=10), labels, np.arange(100), seed=0)
    for f in range(10):
        assert np.bincount(labels[folds == f], minlength=3).tolist() == [5, 3, 2]


def test_seeded_and_deterministic():
    labels, groups = data()
    p = Protocol(k=5, grouped=True)
    a = assign_folds(p, labels, groups, seed=4)
    assert np.array_equal(a, assign_folds(p, labels, groups, seed=4))
    assert not np.array_equal(a, assign_folds(p, labels, groups, seed=5))


def test_holdout_grouped():
    labels, groups = data()
    folds = assign_folds(Protocol(kind="holdout", grouped=True, test_fraction=0.25), labels, groups, seed=0)
    assert set(folds) == {-1, 0}
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1


def test_too_few_patients_is_a_clear_error():
    with pytest.raises(BenchboxError, match="at least 10 patients"):
        assign_folds(Protocol(k=10, grouped=True, stratified=False), [0, 1] * 5, [0, 1, 2] * 3 + [3], 0)


# --- repeated cross-validation (repeats = r) --------------------------------------------------------
@pytest.mark.parametrize("grouped", [False, True])
def test_repeated_kfold_draws_r_seeded_splits_numbered_repeat_times_k_plus_fold(grouped):
    labels, groups = data()
    plain = assign_folds(Protocol(k=5, grouped=grouped), labels, groups, seed=1)
    folds = assign_folds(Protocol(k=5, grouped=grouped, repeats=3), labels, groups, seed=1)
    assert folds.shape == (3, len(labels))
    assert np.array_equal(folds[0], plain)  # one repeat is exactly the plain split: old fingerprints hold
    for j in range(3):
        assert set(folds[j]) == set(range(5 * j, 5 * j + 5))
        for f in range(5 * j, 5 * j + 5):
            train, test = train_test_indices(folds, f)
            assert np.array_equal(test, np.flatnonzero(folds[j] == f))
            assert len(train) + len(test) == len(labels) and not set(train) & set(test)
        if grouped:
            for g in np.unique(groups):
                assert len(set(folds[j][groups == g])) == 1  # no patient in two folds of one repeat
    # each repeat its own split: the partitions differ (not merely renumbered)
    assert not np.array_equal(folds[1] - 5, folds[0]) and not np.array_equal(folds[2] - 10, folds[1] - 5)
    again = assign_folds(Protocol(k=5, grouped=grouped, repeats=3), labels, groups, seed=1)
    assert np.array_equal(folds, again)
    other = assign_folds(Protocol(k=5, grouped=grouped, repeats=3), labels, groups, seed=2)
    assert not np.array_equal(folds, other)


def test_repeats_in_label_fold_count_and_fingerprint():
    from benchbox.data.splitters import fold_count
    from benchbox.execute.store import split_fingerprint

    labels, groups = data()
    one, three = Protocol(k=5), Protocol(k=5, repeats=3)
    assert one.label == "5-fold (stratified)" and three.label == "3x5-fold (stratified)"
    assert (one.n_folds, three.n_folds, three.repeats) == (5, 15, 3)
    folds = assign_folds(three, labels, groups, seed=0)
    assert fold_count(folds) == 15
    ids = [f"i{n}" for n in range(len(labels))]
    fp = split_fingerprint(ids, folds, three.label)
    assert fp == split_fingerprint(ids, folds.tolist(), three.label)  # as read back from splits/*.json
    assert fp != split_fingerprint(ids, folds[:2], "2x5-fold (stratified)")
    swapped = folds.copy()
    swapped[2, [0, 1]] = swapped[2, [1, 0]]
    assert swapped[2, 0] == swapped[2, 1] or split_fingerprint(ids, swapped, three.label) != fp
    assert split_fingerprint(ids, folds[0], one.label) == split_fingerprint(ids, folds[0].tolist(), one.label)


def test_repeats_option_checked_by_the_strategy():
    assert KFold().check_options({"k": 5, "repeats": 0}) == [
        "repeats: must be between 1 and 100 (each repeat is k more models per cell), got 0"
    ]
    assert KFold().check_options({"k": 5, "repeats": 3}) == []
    assert CrossDataset().repeats({"repeats": 2}) == 2 and Holdout().repeats({}) == 1


def test_checked_folds_refuses_repeats_that_share_fold_numbers():
    from benchbox.data.splitters import checked_folds

    rows = np.array([[0, 1, 0, 1], [0, 1, 1, 0]])  # the second repeat reuses folds 0 and 1
    with pytest.raises(BenchboxError, match="each repeat's row its own fold numbers"):
        checked_folds(rows, 4, "mine")
    assert checked_folds(np.array([[0, 1, 0, 1], [2, 3, 3, 2]]), 4, "mine").shape == (2, 4)
