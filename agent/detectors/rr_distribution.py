"""How far a window's RR differences are from those of atrial fibrillation: a Kolmogorov-Smirnov distance.

After Tateno & Glass (2001), "Automatic detection of atrial fibrillation using the coefficient of
variation and density histograms of RR and ΔRR intervals" (Med. Biol. Eng. Comput. 39:664-671): AF's
ΔRR follow a distribution whose spread grows with the mean RR, and a window whose ΔRR distribution is
close to it (small KS distance) is AF-like. The paper's references are histograms per 50-ms mean-RR bin
over 100-beat windows; here the reference is one parametric family fitted on the CPSC-2021 sample's AF:
ΔRR / mean RR ~ Normal(0, `scale`) (the held-out fit gave scale 0.33-0.35 on the folds; a Laplace family
did about as well, docs/benchmarks.md), measured over a short context (32 beats) because paroxysms are
short. Regular rhythms (ΔRR near 0) and ectopy (a few large ΔRR among small ones) are both far from it.
"""

from __future__ import annotations

import numpy as np

from agent.detectors.base import FloatArray

# Abramowitz & Stegun 7.1.26: erf to within 1.5e-7, numpy only (scipy is not an agent dependency).
_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def normal_cdf(x: FloatArray) -> FloatArray:
    """Standard normal CDF of `x` (±inf allowed)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + _P * z)
    poly = t * (_A[0] + t * (_A[1] + t * (_A[2] + t * (_A[3] + t * _A[4]))))
    erf = 1.0 - poly * np.exp(-(z**2))
    out: FloatArray = 0.5 * (1.0 + np.sign(x) * erf)
    return out


def af_distance(rr: FloatArray, scale: float, min_values: int = 2) -> FloatArray:
    """KS distance of each (S, W) row's ΔRR / mean RR (NaN intervals dropped with the differences that
    touch them) from Normal(0, `scale`): 0 = exactly AF-like, towards 1 = far from AF. NaN where a row has
    fewer than `min_values` differences."""
    with np.errstate(all="ignore"):
        count = (~np.isnan(rr)).sum(axis=1)
        mean = np.where(count > 0, np.nansum(rr, axis=1) / np.maximum(count, 1), np.nan)
        ordered = np.sort(np.diff(rr, axis=1) / mean[:, None], axis=1)  # NaN last
    n = (~np.isnan(ordered)).sum(axis=1)[:, None]
    i = np.arange(1, ordered.shape[1] + 1)[None, :]
    cdf = normal_cdf(np.nan_to_num(ordered, nan=np.inf) / scale)
    size = np.maximum(n, 1)
    gap = np.where(i <= n, np.maximum(i / size - cdf, cdf - (i - 1) / size), -np.inf)
    distance: FloatArray = np.where(n[:, 0] >= min_values, gap.max(axis=1, initial=-np.inf), np.nan)
    return distance
