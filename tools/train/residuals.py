"""Training windows for a model that sees each stream's window residual (`AutoencoderDetector`'s
`pca_fraction`), built exactly as the detector builds its inputs.

On the gateway each stream learns, on its first `adapt_rows` rows, its own per-channel mean and scale
(never below a floor) and the principal subspace of its standardised windows, and the model is fed what
that subspace leaves of every later window. A model for that input is trained on the same thing: every
recording (one stream's run) standardised by its own first rows and taken off its own subspace there.
No labels are used. numpy only (the detector's own functions), so evaluation tools need no torch.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from agent.detectors.window_pca import fit_window_pca, pca_residual


def residual_windows(
    values: NDArray[np.float64], window: int, components: int, floor: NDArray[np.float64], adapt_rows: int
) -> NDArray[np.float32]:
    """Every (W, C) window of one recording as the detector feeds it to the model: standardised by the
    recording's first `adapt_rows` rows (scale at least `floor`) and taken off the subspace of the
    `components` principal directions of those rows' windows."""
    dims = window * values.shape[1]
    if adapt_rows - window + 1 < dims:
        raise ValueError(
            f"adapt_rows {adapt_rows} gives {adapt_rows - window + 1} windows, too few to fit the"
            f" {dims}-dimensional window subspace: use adapt_rows >= {dims + window - 1}"
        )
    if len(values) < adapt_rows:
        raise ValueError(f"a recording of {len(values)} rows is shorter than adapt_rows ({adapt_rows})")
    mean, scale, basis = fit_window_pca(values[:adapt_rows], window, components, floor)
    z = sliding_window_view((values - mean) / scale, window, axis=0).transpose(0, 2, 1)
    return pca_residual(z, np.broadcast_to(basis, (len(z), *basis.shape))).astype(np.float32)


def residual_preprocessing(pca_fraction: float, adapt_rows: int) -> dict[str, object]:
    """The card's `preprocessing` block for such a model: the detector reads `pca_fraction` from it."""
    return {
        "pca_fraction": pca_fraction,
        "subspace": f"each stream's own, fitted on its first {adapt_rows} rows (detector adapt_rows)",
    }
