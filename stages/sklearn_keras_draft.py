"""DRAFT, to be pasted into stages/training.py: a scikit-learn classifier around any Keras model builder.

Keras 3's `keras.wrappers.SKLearnClassifier` lacks three things a grid search
needs: `predict_proba` (scikit-learn's log-loss scorer calls it), quiet
predictions (its `predict` shows a progress bar per call), and a clone that
keeps `fit_kwargs` (Keras 3.15's `__sklearn_clone__` drops them, so every
candidate would fit with Keras' defaults). `KerasClassifier` adds all three.
The class is made on first use, so importing this module does not import
Keras; the module's `__getattr__` hands it to pickle by name, which
GridSearchCV's worker processes (n_jobs > 1) need.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import numpy as np


@functools.cache
def _keras_classifier_class() -> type:
    from keras.wrappers import SKLearnClassifier

    class KerasClassifier(SKLearnClassifier):
        """SKLearnClassifier + predict_proba, quiet predictions, and a clone that keeps fit_kwargs."""

        def decision_function(self, X):
            """(n, classes) model outputs, without Keras' per-call progress bar."""
            from sklearn.utils.validation import check_is_fitted, validate_data

            check_is_fitted(self)
            return self.model_.predict(validate_data(self, X, reset=False), verbose=0)

        def predict_proba(self, X):
            """The model's outputs (softmax probabilities for a softmax model)."""
            return self.decision_function(X)

        def predict(self, X):
            """The most probable class of each row."""
            return self.classes_[np.argmax(self.decision_function(X), axis=1)]

        def __sklearn_clone__(self):
            # SKLearnClassifier's own clone passes model, warm_start and model_kwargs but drops fit_kwargs.
            return type(self)(
                model=self.model,
                warm_start=self.warm_start,
                model_kwargs=copy.deepcopy(self.model_kwargs),
                fit_kwargs=copy.deepcopy(self.fit_kwargs),
            )

    KerasClassifier.__module__ = __name__
    KerasClassifier.__qualname__ = "KerasClassifier"
    return KerasClassifier


def keras_classifier(model: Callable[..., Any], **kwargs: Any) -> Any:
    """An unfitted KerasClassifier; `model(X, y, **model_kwargs)` builds and compiles the Keras model."""
    return _keras_classifier_class()(model=model, **kwargs)


def __getattr__(name: str) -> Any:
    # Module attribute made on first use: pickle finds the class by name without this module importing Keras.
    if name == "KerasClassifier":
        return _keras_classifier_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
