"""Small plain-numpy classifiers for per-beat AF features: logistic regression and shallow boosted trees.

Both return a `Model` whose output is a logit (higher = more AF-like). Features are standardised with
the training rows' mean and scale inside the model, so a fitted model is a few numbers a gateway could
evaluate without any library beyond numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agent.detectors.base import BoolArray, FloatArray

# Ridge on the standardised weights: only keeps IRLS finite when a feature separates the training
# beats; fixed in advance, not tuned (with ~4,000 training beats 1 and 100 gave the same folds).
L2 = 1.0
Tree = float | tuple[int, float, "Tree", "Tree"]  # a leaf value, or (feature, cut, left <= cut, right)


@dataclass(frozen=True, slots=True)
class Model:
    mean: FloatArray
    scale: FloatArray
    logit: Callable[[FloatArray], FloatArray]  # standardised (N, F) -> (N,)

    def __call__(self, x: FloatArray) -> FloatArray:
        return self.logit((x - self.mean) / self.scale)


def _standardise(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    scale = x.std(axis=0)
    return x.mean(axis=0), np.where(scale > 0, scale, 1.0)


def logistic(x: FloatArray, y: BoolArray, l2: float = L2, iterations: int = 100) -> Model:
    """L2-penalised logistic regression fitted by Newton steps (IRLS); intercept not penalised."""
    mean, scale = _standardise(x)
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    target = y.astype(float)
    penalty = l2 * np.eye(z.shape[1])
    penalty[0, 0] = 0.0
    w = np.zeros(z.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        gradient = z.T @ (p - target) + penalty @ w
        hessian = (z * (p * (1.0 - p))[:, None]).T @ z + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return Model(mean, scale, lambda s: w[0] + s @ w[1:])


def boosted_trees(
    x: FloatArray, y: BoolArray, depth: int = 2, rounds: int = 60, shrinkage: float = 0.1, min_leaf: int = 20
) -> Model:
    """Gradient-boosted regression trees on the logistic loss (second-order leaf values, λ = 1).

    Splits are searched at 19 quantiles (5 %-95 %) of each feature over the training rows.
    """
    mean, scale = _standardise(x)
    s = (x - mean) / scale
    cuts = [np.unique(np.quantile(s[:, j], np.linspace(0.05, 0.95, 19))) for j in range(s.shape[1])]
    target = y.astype(float)
    prior = float(np.log(target.mean() / (1.0 - target.mean())))
    logit = np.full(len(s), prior)
    trees: list[Tree] = []
    for _ in range(rounds):
        p = 1.0 / (1.0 + np.exp(-logit))
        tree = _grow(s, p - target, p * (1.0 - p), np.arange(len(s)), cuts, depth, min_leaf)
        trees.append(tree)
        logit += shrinkage * _predict(tree, s)

    def predict(t: FloatArray) -> FloatArray:
        return prior + shrinkage * sum((_predict(tree, t) for tree in trees), np.zeros(len(t)))

    return Model(mean, scale, predict)


def _grow(
    s: FloatArray,
    g: FloatArray,
    h: FloatArray,
    rows: np.ndarray,
    cuts: list[FloatArray],
    depth: int,
    min_leaf: int,
) -> Tree:
    total_g, total_h = g[rows].sum(), h[rows].sum()
    leaf = float(-total_g / (total_h + 1.0))
    if depth == 0:
        return leaf
    base = total_g**2 / (total_h + 1.0)
    best_gain, best = 0.0, None
    for j, column_cuts in enumerate(cuts):
        for c in column_cuts:
            left = s[rows, j] <= c
            n_left = int(left.sum())
            if n_left < min_leaf or len(rows) - n_left < min_leaf:
                continue
            gl, hl = g[rows][left].sum(), h[rows][left].sum()
            gain = gl**2 / (hl + 1.0) + (total_g - gl) ** 2 / (total_h - hl + 1.0) - base
            if gain > best_gain:
                best_gain, best = gain, (j, float(c))
    if best is None:
        return leaf
    j, c = best
    left = s[rows, j] <= c
    return (
        j,
        c,
        _grow(s, g, h, rows[left], cuts, depth - 1, min_leaf),
        _grow(s, g, h, rows[~left], cuts, depth - 1, min_leaf),
    )


def _predict(tree: Tree, s: FloatArray) -> FloatArray:
    if not isinstance(tree, tuple):
        return np.full(len(s), tree)
    j, c, left, right = tree
    out = np.empty(len(s))
    go_left = s[:, j] <= c
    out[go_left] = _predict(left, s[go_left])
    out[~go_left] = _predict(right, s[~go_left])
    return out
