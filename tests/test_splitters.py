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
