"""Photometric refit of a deblender's brightest component against the blend.

The peeling RDN was first trained with an L1 loss, which pulls the faint outer
wings of a galaxy towards zero and left its total flux a little low (−0.7 % at
i < 22, −2 to −4 % at i = 23–25.3) and its size a little off. Its *shape*
is nonetheless a good template. The refit keeps the other components fixed and
fits the blend minus them with a non-negative combination of the component and
the same component broadened by a Gaussian, weighted by the inverse pixel
variance (sky + source Poisson noise): forced photometry with the network's
own model, given the freedom to widen. A refit that would change the flux by
more than a factor of two is refused and the network's component kept.

On 1000 validation blends of two galaxies (``lsst-i``, seed 424242; never the
test set), with those weights, it took the brighter galaxy's Δf/f from −1.4 % bias / 7.1 % scatter
to −0.2 % / 5.9 %, leaving the fainter galaxy (whose image the refit does not
touch) and 3-galaxy blends as they were. Refitting every component's amplitude
made the third galaxy of triples worse (25.9 → 27.6 % scatter); giving the
fainter ones the broadened template too made them worse (14.6 → 15.4 %): in
the wings of a brighter neighbour their fit has too much freedom.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.optimize import nnls

BROADEN_PX = 2.5  # σ of the Gaussian that broadens the template, pixels (chosen on the validation set: 1.0-2.5)
MAX_FLUX_CHANGE = 2.0  # a refit changing the flux by more than this factor either way is refused


def refit_component(
    stamp: np.ndarray,
    components: np.ndarray,
    index: int,
    sigma: float,
    broaden_px: float = BROADEN_PX,
) -> np.ndarray:
    """Refit component ``index`` to ``stamp`` minus the other components; return the new component.

    Parameters
    ----------
    stamp : numpy.ndarray
        The blend, ``(C, H, W)``, background-subtracted, in electrons (the
        source Poisson variance is taken as the model's value).
    components : numpy.ndarray
        All components, ``(K, C, H, W)``; only ``components[index]`` is refit.
    index : int
        Which component to refit.
    sigma : float
        The sky noise (standard deviation per pixel).
    broaden_px : float
        Width (Gaussian σ, pixels) of the broadened copy of the template.

    Returns
    -------
    numpy.ndarray
        ``(C, H, W)`` float32: ``a · T + b · (T ⊛ G)`` with ``a, b ≥ 0`` fitted by
        weighted least squares, or the unchanged component when the fit is refused
        (no flux, or the flux would change by more than ``MAX_FLUX_CHANGE``×).
    """
    template = components[index].astype(np.float64)
    flux = template.sum()
    if not flux > 0 or not np.isfinite(flux):
        return components[index]
    model = components.sum(axis=0, dtype=np.float64)
    data = stamp.astype(np.float64) - (model - template)  # the blend minus the other components
    broadened = np.stack([ndimage.gaussian_filter(band, broaden_px) for band in template])
    weight = 1.0 / np.sqrt(sigma**2 + np.clip(model, 0.0, None)).ravel()
    design = np.stack([template.ravel(), broadened.ravel()], axis=1) * weight[:, None]
    try:
        (a, b), _ = nnls(design, data.ravel() * weight)
    except RuntimeError:  # nnls did not converge: keep the network's component
        return components[index]
    refit = a * template + b * broadened
    if not 1 / MAX_FLUX_CHANGE < refit.sum() / flux < MAX_FLUX_CHANGE:
        return components[index]
    return refit.astype(np.float32)
