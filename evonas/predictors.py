"""Predictors of an objective from genome features, with an uncertainty (torch-free).

The protocol is two calls: `fit(X, y)` on what the journal measured so far, then
`predict(X) -> (mean, std)` for candidates. A predictor is refit from scratch each time (the
data are small: one row per evaluation), and deterministic for its seed, so a replayed run
predicts exactly what the original did.

- `trees`: an ensemble of extremely randomized trees (scikit-learn); the mean and spread of the
  trees' predictions. Insensitive to the scale of features, so it suits any genome.
- `gp`: a Gaussian process (scikit-learn) with a fixed RBF kernel on features scaled to [0, 1]
  and targets standardised. The hyperparameters are not fitted: on a few dozen points
  maximum-likelihood fits chase noise, and fixed ones keep it cheap and stable.

Acquisition functions turn (mean, std) into how much an evaluation is worth (larger is better;
values are oriented so that larger is better before they get here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np


class Predictor(Protocol):
    width: int  # the number of features it was fit on; predict takes as many

    def fit(self, X: np.ndarray, y: np.ndarray) -> None:
        """Learn y (one value per row of X, larger is better) from scratch."""

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The predicted mean and standard deviation of each row of X."""


class TreesPredictor:
    def __init__(self, seed: int, trees: int = 64) -> None:
        self.seed, self.trees = seed, trees

    def fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.ensemble import ExtraTreesRegressor

        self.width = X.shape[1]
        # bootstrap: without it every tree fits every point and the spread says nothing there
        self.model = ExtraTreesRegressor(
            n_estimators=self.trees, bootstrap=True, random_state=self.seed, n_jobs=1
        ).fit(X, y)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_tree = np.stack([tree.predict(X) for tree in self.model.estimators_])
        return per_tree.mean(axis=0), per_tree.std(axis=0)


class GaussianProcessPredictor:
    def __init__(self, seed: int, length_scale: float = 2.0, noise: float = 0.01) -> None:
        self.length_scale, self.noise = length_scale, noise

    def fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF

        self.width = X.shape[1]
        self.low, span = X.min(axis=0), np.ptp(X, axis=0)
        self.span = np.where(span > 0, span, 1.0)
        self.model = GaussianProcessRegressor(
            RBF(self.length_scale, length_scale_bounds="fixed"),
            alpha=self.noise,
            optimizer=None,
            normalize_y=True,
        ).fit(self._scaled(X), y)

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        return (X - self.low) / self.span

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.model.predict(self._scaled(X), return_std=True)
        return mean, std


PREDICTORS: dict[str, Callable[[int], Predictor]] = {
    "trees": TreesPredictor,
    "gp": GaussianProcessPredictor,
}


def make_predictor(name: str, seed: int) -> Predictor:
    return PREDICTORS[name](seed)


# --- acquisition functions ---------------------------------------------------------------------


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, beta: float) -> np.ndarray:
    """E[max(value - best, 0)] under the prediction (Jones et al. 1998)."""
    from scipy.stats import norm

    std = np.maximum(std, 1e-12)
    z = (mean - best) / std
    return (mean - best) * norm.cdf(z) + std * norm.pdf(z)


def upper_confidence(mean: np.ndarray, std: np.ndarray, best: float, beta: float) -> np.ndarray:
    """mean + beta * std, less the best so far (so that > 0 means it may improve on it)."""
    return mean + beta * std - best


Acquisition = Callable[[np.ndarray, np.ndarray, float, float], np.ndarray]
ACQUISITIONS: dict[str, Acquisition] = {"ei": expected_improvement, "ucb": upper_confidence}
