"""Rasterizer constants, mirrored from ``cuda_ext/common.h`` (a test parses the header and
checks every value here). Forward, backward and every backend use these same numbers."""

from __future__ import annotations

TILE_SIZE: int = 16
"""Square screen tiles in pixels (the kernels' unit of binning and parallel work)."""
ALPHA_MIN: float = 1.0 / 255.0
"""A splat whose alpha at a pixel is below 1/255 is skipped there."""
ALPHA_MAX: float = 0.99
"""Alpha is clamped to this so ``1 - alpha`` stays invertible."""
TRANSMITTANCE_MIN: float = 1e-4
"""Compositing of a pixel stops when its transmittance would fall below this."""
LOW_PASS: float = 0.3
"""2D low-pass (px^2) added to the diagonal of every screen covariance."""
NEAR_PLANE: float = 0.01
"""Splats with camera-space depth z <= this are culled."""
FOV_CLAMP: float = 1.3
"""x/z, y/z are clamped to this multiple of the field of view before forming the Jacobian."""
SIGMA_CUT: float = 3.0
"""Footprint cut: a splat touches a pixel only where q <= SIGMA_CUT**2."""
MAHALANOBIS_MAX: float = SIGMA_CUT * SIGMA_CUT

# name in common.h -> name here (tests/test_render_twin.py checks the header against these)
HEADER_NAMES: dict[str, str] = {
    "kTileSize": "TILE_SIZE",
    "kAlphaMin": "ALPHA_MIN",
    "kAlphaMax": "ALPHA_MAX",
    "kTransmittanceMin": "TRANSMITTANCE_MIN",
    "kLowPass": "LOW_PASS",
    "kNearPlane": "NEAR_PLANE",
    "kFovClamp": "FOV_CLAMP",
    "kSigmaCut": "SIGMA_CUT",
}
