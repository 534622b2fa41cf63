"""A transit classifier of your own: logistic regression on the local view.

Name it in the project and ``skyretriever train`` fits it, writes it to the
model file, and runs score with it, like the built-in ``cnn`` and ``gbt``::

    project: {module_path: [..]}          # the folder holding extensions/
    analysis:
      finders: [transit]
      classifier:
        enabled: true
        model: "extensions.logistic_classifier:LogisticClassifier"
        model_file: ../models/logistic.skm

A model is a :class:`~skyretriever.analysis.classifier.TransitClassifier`
subclass with a ``name`` and four methods: ``fit`` (views and 0/1 labels),
``predict`` (scores from 0 to 1), ``state`` (bytes to keep) and ``load_state``.
"""

from __future__ import annotations

import pickle
from typing import ClassVar

import numpy as np

from skyretriever.analysis.classifier import TransitClassifier


class LogisticClassifier(TransitClassifier):
    """scikit-learn's logistic regression on the local view (the transit's shape)."""

    name: ClassVar[str] = "logistic"

    def fit(self, global_views, local_views, labels, validation, pars):
        from sklearn.linear_model import LogisticRegression

        self.check_views(global_views, local_views)
        self.estimator = LogisticRegression(C=0.1, max_iter=2000)
        self.estimator.fit(np.asarray(local_views, dtype=float), np.asarray(labels, dtype=int))
        return {"train_loss": [], "validation_loss": []}

    def predict(self, global_views, local_views):
        self.check_views(global_views, local_views)
        return self.estimator.predict_proba(np.asarray(local_views, dtype=float))[:, 1]

    def state(self) -> bytes:
        return pickle.dumps(self.estimator)

    def load_state(self, data: bytes) -> None:
        self.estimator = pickle.loads(data)
