import math

import numpy as np
import pytest

from benchbox.results.statistics import confusion_matrix
from benchbox_paper_metrics.metrics import paper_metrics

CLASSES = ["covid", "pneumonia", "normal"]


def test_hand_computed_three_class_case():
    # actual:    covid x4, pneumonia x3, normal x3
    y_true = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 2, 0, 2, 2, 1]
    m = paper_metrics(y_true, y_pred, CLASSES, "covid")
    # TP: covid->covid 3; FN: covid->pneumonia 1; FP: pneumonia->covid 1; TN: 10-3-1-1 = 5
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 1, 5)
    assert m["accuracy_3class"] == pytest.approx(6 / 10)  # 3 + 1 + 2 on the diagonal
    assert m["accuracy_2class"] == pytest.approx(8 / 10)  # a pneumonia/normal mix-up counts as right
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["confusion"] == [[3, 1, 0], [1, 1, 1], [0, 1, 2]]


def test_class_never_predicted_has_zero_column_and_defined_metrics():
    y_true = [0, 1, 2, 2]
    y_pred = [1, 1, 2, 2]  # covid never predicted
    m = paper_metrics(y_true, y_pred, CLASSES, "covid")
    assert [row[0] for row in m["confusion"]] == [0, 0, 0]
    assert m["sensitivity"] == 0.0
    assert m["specificity"] == 1.0


def test_no_positives_gives_nan_sensitivity_not_a_crash():
    m = paper_metrics([1, 2], [1, 1], CLASSES, "covid")
    assert math.isnan(m["sensitivity"])
    assert m["specificity"] == 1.0


def test_positive_class_is_a_parameter():
    y_true = [0, 1, 1, 2]
    y_pred = [0, 1, 0, 2]
    m = paper_metrics(y_true, y_pred, CLASSES, "pneumonia")
    assert (m["tp"], m["fn"], m["fp"]) == (1, 1, 0)


def test_pooled_and_fold_spread():
    y_true = np.array([0, 1, 2, 0, 1, 2])
    y_pred = np.array([0, 1, 2, 1, 1, 2])
    folds = np.array([0, 0, 0, 1, 1, 1])
    m = paper_metrics(y_true, y_pred, CLASSES, "covid", folds=folds)
    assert m["accuracy_3class"] == pytest.approx(5 / 6)  # pooled, not the mean of folds
    assert m["accuracy_3class_fold_mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["accuracy_3class_fold_std"] == pytest.approx(np.std([1, 2 / 3], ddof=1))
    assert m["folds"] == 2


def test_single_fold_has_no_spread():
    m = paper_metrics([0, 1], [0, 1], CLASSES, "covid", folds=[0, 0])
    assert math.isnan(m["sensitivity_fold_std"])


def test_unknown_positive_class_is_an_error():
    with pytest.raises(ValueError, match="positive class"):
        paper_metrics([0], [0], CLASSES, "COVID-19")


def test_confusion_matrix_shape_mismatch():
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 3)
