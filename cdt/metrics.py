"""Metrics of the critic's judgement (scikit-learn where it has the estimator)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def auroc(scores, labels) -> float | None:
    """Area under the ROC curve with label 1 = wrong; None when only one class is present."""
    labels = np.asarray(labels)
    if labels.size == 0 or labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, np.asarray(scores)))
