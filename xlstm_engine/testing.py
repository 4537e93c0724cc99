"""Numerical comparison used by the tests: relative RMS error with an absolute floor, one bound per dtype."""

import torch

# Relative RMS error bounds, by the dtype of the tensor under test. Never loosen one silently.
TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 1e-2}


def error_ratio(ref: torch.Tensor, out: torch.Tensor) -> float:
    """||out - ref|| / ||ref||, computed in float64."""
    ref, out = ref.detach().double(), out.detach().double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, ratio: float | None = None,
                 atol: float = 1e-12) -> None:
    """Assert that `out` matches the reference: rms(out - ref) <= ratio * rms(ref) + atol, and no NaN/inf.

    `ratio` defaults to TOLERANCES[out.dtype]. `atol` is the floor for references that are (near) zero.
    """
    if ratio is None:
        ratio = TOLERANCES[out.dtype]
    if ref.shape != out.shape:
        raise AssertionError(f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    if not torch.isfinite(out).all():
        raise AssertionError(f"{name}: {(~torch.isfinite(out)).sum().item()} non-finite values")
    ref64, out64 = ref.detach().double(), out.detach().double()
    diff_rms = (out64 - ref64).pow(2).mean().sqrt().item()
    ref_rms = ref64.pow(2).mean().sqrt().item()
    if not diff_rms <= ratio * ref_rms + atol:
        max_abs = (out64 - ref64).abs().max().item()
        raise AssertionError(f"{name}: relative rms error {diff_rms / max(ref_rms, 1e-300):.3e} > {ratio:.1e} "
                             f"(rms diff {diff_rms:.3e}, ref rms {ref_rms:.3e}, max abs diff {max_abs:.3e})")
