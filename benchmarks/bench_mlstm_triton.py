"""mLSTM forward on the GPU: the Triton kernels against the PyTorch chunkwise form and SDPA flash attention.

    python benchmarks/bench_mlstm_triton.py [--tokens 65536] [--seqlens 2048 8192]

B * S = tokens, bf16 inputs, exponential input gate. Prints the median time (triton.testing.do_bench) and the
relative error of the Triton output against the PyTorch chunkwise form in float32.
"""

import argparse

import torch
import torch.nn.functional as F
import triton

from xlstm_engine.ops.mlstm import mlstm

GEOMETRIES = {"7B (8 heads, 256/512)": (8, 256, 512), "TFLA paper (16 heads, 128/256)": (16, 128, 256)}


def inputs(B, S, H, DK, DV, dtype=torch.bfloat16):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.randn(B, S, H, DK, device="cuda", generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(B, S, H, DV, device="cuda", generator=g, dtype=dtype)
    i = torch.randn(B, S, H, device="cuda", generator=g) - 2.0
    f = torch.randn(B, S, H, device="cuda", generator=g) + 3.0
    return q, k, v, i, f


def measure(H: int, DK: int, DV: int, S: int, B: int) -> tuple[float, dict[str, float]]:
    """(relative error of the Triton output, {implementation: median ms}) at one size."""
    q, k, v, i, f = inputs(B, S, H, DK, DV)
    times = {f"triton L={chunk}": triton.testing.do_bench(
        lambda chunk=chunk: mlstm(q, k, v, i, f, backend="triton", chunk_size=chunk), return_mode="median")
        for chunk in (64, 128)}
    with torch.no_grad():
        ref, _ = mlstm(q.float(), k.float(), v.float(), i, f, backend="chunkwise", chunk_size=64)
        out, _ = mlstm(q, k, v, i, f, backend="triton", chunk_size=64)
    error = ((out.float() - ref).norm() / ref.norm()).item()
    del ref, out
    torch.cuda.empty_cache()
    times["torch chunkwise"] = triton.testing.do_bench(
        lambda: mlstm(q, k, v, i, f, backend="chunkwise", chunk_size=64), return_mode="median")
    qa = torch.randn(B, 32, S, 128, device="cuda", dtype=torch.bfloat16)
    times["SDPA flash 32x128"] = triton.testing.do_bench(
        lambda: F.scaled_dot_product_attention(qa, qa, qa, is_causal=True), return_mode="median")
    return error, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--seqlens", type=int, nargs="+", default=[2048, 8192])
    args = parser.parse_args()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    rows = []
    for name, (H, DK, DV) in GEOMETRIES.items():
        for S in args.seqlens:
            B = args.tokens // S
            error, times = measure(H, DK, DV, S, B)
            torch.cuda.empty_cache()
            rows.append((name, S, B, error, times))
            print(name, S, B, f"err {error:.2e}", {k: round(t, 3) for k, t in times.items()}, flush=True)
    print("\n| geometry | S | B | " + " | ".join(rows[0][4]) + " | rel. error (bf16 vs fp32 chunkwise) |")
    print("|---" * (len(rows[0][4]) + 4) + "|")
    for name, S, B, error, times in rows:
        print(f"| {name} | {S} | {B} | " + " | ".join(f"{t:.2f} ms" for t in times.values()) + f" | {error:.1e} |")


if __name__ == "__main__":
    main()
