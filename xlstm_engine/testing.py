"""Numerical comparison used by the tests: relative RMS error with an absolute floor, one bound per dtype."""

import torch

# Relative RMS error bounds, by the dtype of the tensor under test. Never loosen one silently.
TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 1e-2}

# Ceilings of the adaptive bounds (`adaptive_ratio`), by the dtype under test. On ill-conditioned inputs (gate
# pre-activations around +-30, cancelling sums) every implementation in that precision loses digits, so a fast path
# is held to twice the error of a plain one in the same precision; but never to more than this, so that an adaptive
# bound can still fail when the plain implementation itself is broken or hopeless on the inputs. float64 and
# float32: 100 times the nominal bound (for float32 that is the tf32 bound, the loosest that docs/DESIGN accept for
# float32 inputs); the 16-bit types: 5e-2, above which a result is wrong, not imprecise. Never raise one silently.
ADAPTIVE_CEILINGS = {torch.float64: 1e-8, torch.float32: 1e-3, torch.float16: 5e-2, torch.bfloat16: 5e-2}

# The default absolute floor of `assert_close`: only for references that are (near) zero, far below any rounding
# error of a reference of order one
ATOL = 1e-12


def error_ratio(ref: torch.Tensor, out: torch.Tensor) -> float:
    """||out - ref|| / ||ref||, computed in float64."""
    ref, out = ref.detach().double(), out.detach().double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def _rms(t: torch.Tensor) -> float:
    return t.detach().double().pow(2).mean().sqrt().item()


def adaptive_ratio(ref: torch.Tensor, plain: torch.Tensor, dtype: torch.dtype | None = None, factor: float = 2.0,
                   magnitude: torch.Tensor | None = None) -> float:
    """The bound for a fast path where any implementation in its precision loses digits: `factor` times the
    relative RMS error of `plain` (a plain implementation in the same precision on the same inputs, e.g. the
    float32 time loop), at least TOLERANCES[dtype] and at most ADAPTIVE_CEILINGS[dtype].

    `dtype` defaults to plain's; `magnitude` as in `assert_close` (the error is relative to rms(magnitude)).
    """
    dtype = plain.dtype if dtype is None else dtype
    scale = _rms(ref if magnitude is None else magnitude)
    own = _rms(plain.detach().double() - ref.detach().double()) / max(scale, 1e-300)
    return min(ADAPTIVE_CEILINGS[dtype], max(TOLERANCES[dtype], factor * own))


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, ratio: float | None = None,
                 atol: float = ATOL, magnitude: torch.Tensor | None = None) -> None:
    """Assert that `out` matches the reference: rms(out - ref) <= ratio * rms(magnitude) + atol, and no NaN/inf.

    `ratio` defaults to TOLERANCES[out.dtype]. `atol` is the floor for references that are (near) zero.
    `magnitude` defaults to `ref`; for a sum whose terms may cancel (the gradient of a bias: a sum over tokens),
    pass the sum of the terms' magnitudes: a float sum is accurate relative to that, not to its result.
    """
    if ratio is None:
        ratio = TOLERANCES[out.dtype]
    if not 0 <= ratio <= 1 or not 0 <= atol <= 1e-6:
        raise ValueError(f"{name}: a bound ratio={ratio}, atol={atol} cannot fail usefully")
    if ref.shape != out.shape:
        raise AssertionError(f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    if not torch.isfinite(out).all():
        raise AssertionError(f"{name}: {(~torch.isfinite(out)).sum().item()} non-finite values")
    if not torch.isfinite(ref).all():
        raise AssertionError(f"{name}: {(~torch.isfinite(ref)).sum().item()} non-finite values in the reference")
    if magnitude is not None and magnitude.shape != ref.shape:
        raise AssertionError(f"{name}: magnitude shape {tuple(magnitude.shape)} != reference {tuple(ref.shape)}")
    ref64, out64 = ref.detach().double(), out.detach().double()
    diff_rms = (out64 - ref64).pow(2).mean().sqrt().item()
    scale = _rms(ref64 if magnitude is None else magnitude)
    if not diff_rms <= ratio * scale + atol:
        max_abs = (out64 - ref64).abs().max().item()
        of = "ref" if magnitude is None else "magnitude"
        raise AssertionError(f"{name}: relative rms error {diff_rms / max(scale, 1e-300):.3e} > {ratio:.1e} "
                             f"(rms diff {diff_rms:.3e}, {of} rms {scale:.3e}, max abs diff {max_abs:.3e})")


@torch.no_grad()
def randomize_large_(model: torch.nn.Module, seed: int = 0, scale: float = 1.0) -> torch.nn.Module:
    """Draw xLSTM Large weights (either layout, ours or transformers') far from the init, so that every gate, norm
    and bias matters: forget-gate biases linspace(3, 6) plus noise (gates mostly open), norm weights 1 + noise,
    other biases noise, matrices noise * scale / sqrt(fan_in) (a larger `scale` peaks the next-token distribution,
    so that greedy decoding has no near-ties). Returns the model."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        if name.endswith("fgate_preact.bias") and not name.endswith("ifgate_preact.bias"):
            p.copy_(torch.linspace(3.0, 6.0, p.numel()) + 0.5 * noise)
        elif name.endswith("ifgate_preact.bias"):  # fused: the input gates' biases, then the forget gates'
            H = p.numel() // 2
            p.copy_(torch.cat([noise[:H], torch.linspace(3.0, 6.0, H) + 0.5 * noise[H:]]))
        elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.2 * noise)
        elif p.ndim == 1:
            p.copy_(0.5 * noise)
        else:
            p.copy_(scale * noise / p.shape[-1] ** 0.5)
    return model
