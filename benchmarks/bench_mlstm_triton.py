"""mLSTM kernels on the GPU, side by side: ours (Triton), mlstm_kernels' Triton kernels, SDPA flash attention.

    python benchmarks/bench_mlstm_triton.py [--tokens 65536] [--seqlens 2048 8192 32768] [--sweep [CHUNK]] [--json F]

Sequence kernels: forward and forward+backward at B * S = tokens, bf16 q, k, v, fp32 gates, at the xLSTM-7B
and the TFLA-paper head geometries. Step kernels: one decode step of one layer (7B geometry, fp32 state) for
B = 1..256. Also the device's bf16 matmul ceiling and copy bandwidth, which the TFLOP/s and TB/s are set
against. Medians of triton.testing.do_bench (L2 cleared between runs). mlstm_kernels is an oracle for speed only
(optional: rows say "not installed" without it). --sweep tries other launch settings of our kernels.
"""

import argparse
import json
import math

import torch
import torch.nn.functional as F
import triton

from xlstm_engine.ops.mlstm import mlstm, mlstm_step, mLSTMState
from xlstm_engine.ops.mlstm.triton import chunkwise as ours  # TUNING: the launch settings that --sweep varies

GEOMETRIES = {"7B": (8, 256, 512), "TFLA": (16, 128, 256)}


def bench(fn, grads=None) -> float:
    return triton.testing.do_bench(fn, grad_to_none=grads, return_mode="median")


def ceilings() -> dict[str, float]:
    """Measured bf16 matmul TFLOP/s and copy bandwidth (TB/s, read + write)."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    matmul = 2 * 8192**3 / bench(lambda: a @ a) / 1e9
    x = torch.empty(2**29, device="cuda", dtype=torch.float32)
    y = torch.empty_like(x)
    copy = 2 * x.numel() * 4 / bench(lambda: y.copy_(x)) / 1e9
    return dict(matmul_tflops=matmul, copy_tbs=copy)


def mlstm_flops(B, S, H, DK, DV, L=64) -> float:
    """Forward matmul FLOPs of the chunkwise form at chunk L (causal half of the L x L tiles)."""
    return B * S * H * (4 * DK * DV + L * (DK + DV))


def sequence_inputs(B, S, H, DK, DV):
    g = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape, dtype=torch.bfloat16, shift=0.0):
        return (torch.randn(*shape, device="cuda", generator=g) + shift).to(dtype)

    return dict(q=randn(B, S, H, DK), k=randn(B, S, H, DK), v=randn(B, S, H, DV),
                i=randn(B, S, H, dtype=torch.float32, shift=-2.0), f=randn(B, S, H, dtype=torch.float32, shift=3.0))


def implementations(x: dict) -> dict:
    """name -> (function of the inputs, the inputs it wants). Ours takes [B, S, H, D]; mlstm_kernels [B, H, S, D]."""
    impls = {}
    for L in (64, 128):  # 128: the backward recomputes with chunks of 64
        impls[f"ours exp L={L}"] = (lambda q, k, v, i, f, L=L: mlstm(q, k, v, i, f, backend="triton",
                                                                        chunk_size=L)[0], x)
    impls["ours sigmoid L=64"] = (lambda q, k, v, i, f: mlstm(q, k, v, i, f, backend="triton", input_gate="sigmoid",
                                                              chunk_size=64)[0], x)
    theirs = {name: t.transpose(1, 2).contiguous() for name, t in x.items()}
    try:
        from mlstm_kernels.torch import get_mlstm_kernel
    except ImportError:
        return impls
    for name, L in (("triton_limit_chunk", 64), ("triton_xl_chunk", 128), ("triton_xl_chunk_siging", 128)):
        kernel = get_mlstm_kernel(f"chunkwise--{name}")
        impls[f"mlstm_kernels {name}"] = (lambda q, k, v, i, f, kernel=kernel, L=L: kernel(
            q=q, k=k, v=v, i=i, f=f, chunk_size=L), theirs)
    return impls


def time_sequence(fn, x: dict, backward: bool) -> float | str:
    """Median ms of the forward (without autograd) or of forward + backward; an error's first line if it fails."""
    try:
        if not backward:
            with torch.no_grad():
                return bench(lambda: fn(**x))
        leaves = {name: t.detach().requires_grad_() for name, t in x.items()}
        dh = torch.randn_like(fn(**leaves))
        return bench(lambda: fn(**leaves).backward(dh), grads=list(leaves.values()))
    except Exception as error:  # a peer kernel that fails is a result
        return f"fails: {type(error).__name__}: {str(error).strip().splitlines()[0][:80] if str(error) else ''}"
    finally:
        torch.cuda.empty_cache()


def sdpa(B, S) -> tuple[float, float]:
    q = torch.randn(B, 32, S, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    with torch.no_grad():
        fwd = bench(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True))
    out = F.scaled_dot_product_attention(q, q, q, is_causal=True)
    dh = torch.randn_like(out)
    both = bench(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True).backward(dh), grads=[q])
    return fwd, both


def agreement(x: dict) -> dict[str, float]:
    """Relative difference of h: ours against mlstm_kernels' limit_chunk (exp) and xl_chunk_siging (sigmoid)."""
    impls = implementations(x)
    out = {}
    with torch.no_grad():
        for ours_name, theirs_name in (("ours exp L=64", "mlstm_kernels triton_limit_chunk"),
                                       ("ours sigmoid L=64", "mlstm_kernels triton_xl_chunk_siging")):
            if theirs_name in impls:
                a = impls[ours_name][0](**impls[ours_name][1]).float()
                b = impls[theirs_name][0](**impls[theirs_name][1]).transpose(1, 2).float()
                out[f"{ours_name} vs {theirs_name}"] = ((a - b).norm() / b.norm()).item()
    return out


def graphed(fn) -> float:
    """Median us of fn replayed in a CUDA graph (how decoding runs: no Python between the launches)."""
    return triton.testing.do_bench_cudagraph(fn, return_mode="median") * 1e3


def step_table(batches) -> list[dict]:
    """One decode step of one layer at the 7B geometry: ours (Triton, in place), mlstm_kernels' Triton step,
    and the PyTorch step, each in a CUDA graph. us per step, and TB/s of state traffic (fp32 C read and
    written)."""
    try:
        from mlstm_kernels.torch import get_mlstm_step_kernel
        theirs = get_mlstm_step_kernel("triton")
    except ImportError:
        theirs = None
    return [step_row(B, theirs) for B in batches]


def step_row(B: int, theirs) -> dict:
    H, DK, DV = GEOMETRIES["7B"]
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.randn(B, 1, H, DK, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    v = torch.randn(B, 1, H, DV, device="cuda", generator=g, dtype=torch.bfloat16)
    i, f = (torch.randn(B, 1, H, device="cuda", generator=g) for _ in range(2))
    state = mLSTMState.zeros(B, H, DK, DV, device="cuda")
    row = {"B": B}
    with torch.no_grad():
        row["ours"] = graphed(lambda: mlstm(q, k, v, i, f, initial_state=state, inplace=True))
        row["pytorch step"] = graphed(lambda: mlstm_step(q[:, 0], k[:, 0], v[:, 0], i[:, 0], f[:, 0], state))
        if theirs is not None:
            m = state.m[..., None]
            row["mlstm_kernels triton"] = graphed(lambda: theirs(
                q=q[:, 0], k=k[:, 0], v=v[:, 0], i=i[:, 0, :, None], f=f[:, 0, :, None], c=state.C, n=state.n, m=m))
    row["ours TB/s"] = 2 * state.C.numel() * 4 / row["ours"] / 1e6
    return row


def profile(tokens: int) -> str:
    """CUDA time per kernel of our forward + backward at the 7B geometry, S = 8192 (torch.profiler)."""
    H, DK, DV = GEOMETRIES["7B"]
    x = {name: t.requires_grad_() for name, t in sequence_inputs(tokens // 8192, 8192, H, DK, DV).items()}
    run = implementations(x)["ours exp L=64"][0]
    dh = torch.randn_like(run(**x))
    for _ in range(2):
        run(**x).backward(dh)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            run(**x).backward(dh)
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)


def prompt_table(lengths, batches) -> list[dict]:
    """A short prompt continuing a state, one layer, 7B geometry, without autograd (us, do_bench: launches count):
    ours in one launch (the default up to SHORT_PROMPT tokens), ours through the chunkwise kernels, and
    mlstm_kernels' recurrent sequence kernel (its Triton step in a loop, what its models run short inputs on)."""
    try:
        from mlstm_kernels.torch import get_mlstm_sequence_kernel
        theirs = get_mlstm_sequence_kernel("native_sequence__triton")
    except ImportError:
        theirs = None
    rows = [prompt_row(B, S, theirs) for B in batches for S in lengths]
    for row in rows:
        print(row, flush=True)
    return rows


def prompt_row(B: int, S: int, theirs) -> dict:
    from xlstm_engine.ops.mlstm.triton import mlstm_triton

    H, DK, DV = GEOMETRIES["7B"]
    x = sequence_inputs(B, S, H, DK, DV)
    state = mLSTMState.zeros(B, H, DK, DV, device="cuda")
    row = dict(B=B, S=S)
    with torch.no_grad():
        row["ours (one launch)"] = bench(lambda: mlstm(**x, initial_state=state)) * 1e3
        row["ours chunkwise kernels"] = bench(lambda: mlstm_triton(**x, initial_state=state)) * 1e3
        if theirs is not None:
            t = {name: y.transpose(1, 2).contiguous() for name, y in x.items()}
            row["mlstm_kernels step loop"] = bench(lambda: theirs(
                **t, c_initial=state.C, n_initial=state.n, m_initial=state.m[..., None], return_last_states=True)) * 1e3
    return row


def sweep(tokens: int, chunk: int, kernels) -> list[tuple[str, dict, float, float]]:
    """Our kernels' launch settings, one change at a time from TUNING, at the 7B geometry, S = 8192."""
    H, DK, DV = GEOMETRIES["7B"]
    S = 8192
    x = sequence_inputs(tokens // S, S, H, DK, DV)
    fn = implementations(x)[f"ours exp L={chunk}"][0]
    results = [("default", {}, time_sequence(fn, x, False), time_sequence(fn, x, True))]
    for kernel in kernels or ours.TUNING:
        base = ours.TUNING[kernel]
        for key, values in dict(num_warps=(2, 4, 8), num_stages=(1, 2, 3, 4), BK=(32, 64, 128),
                                BV=(32, 64, 128, 256)).items():
            for value in values:
                if value == base[key]:
                    continue
                ours.TUNING[kernel] = dict(base, **{key: value})
                fwd = time_sequence(fn, x, False) if kernel in ("states", "outputs") else math.nan
                both = time_sequence(fn, x, True) if kernel != "outputs" else math.nan  # the backward has no outputs
                results.append((kernel, {key: value}, fwd, both))
                print(*results[-1], flush=True)
        ours.TUNING[kernel] = base
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--seqlens", type=int, nargs="+", default=[2048, 8192, 32768])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256])
    parser.add_argument("--prompts", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--sweep", type=int, nargs="?", const=64, metavar="CHUNK",
                        help="sweep the launch settings at this chunk size (64 or 128) first")
    parser.add_argument("--kernels", nargs="+", choices=list(ours.TUNING), help="the kernels to sweep (all)")
    parser.add_argument("--only-sweep", action="store_true", help="stop after the sweep")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", help="also write all results to this file")
    args = parser.parse_args()
    report = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                  **ceilings())
    try:
        import mlstm_kernels
        report["mlstm_kernels"] = mlstm_kernels.__version__ if hasattr(mlstm_kernels, "__version__") else "installed"
    except ImportError:
        report["mlstm_kernels"] = "not installed"
    print(report, flush=True)
    if args.profile:
        print(profile(args.tokens), flush=True)
    if args.sweep:
        report["sweep"] = sweep(args.tokens, args.sweep, args.kernels)
        if args.only_sweep:
            print(json.dumps(report["sweep"]))
            return
    report["sequence"] = []
    for geometry, (H, DK, DV) in GEOMETRIES.items():
        for S in args.seqlens:
            B = args.tokens // S
            x = sequence_inputs(B, S, H, DK, DV)
            row = dict(geometry=geometry, S=S, B=B, tflop=mlstm_flops(B, S, H, DK, DV) / 1e12)
            for name, (fn, inputs) in implementations(x).items():
                row[name] = (time_sequence(fn, inputs, False), time_sequence(fn, inputs, True))
            row["SDPA flash 32x128"] = sdpa(B, S)
            if args.seqlens[0] == S:
                row["agreement"] = agreement(x)
            report["sequence"].append(row)
            print(row, flush=True)
            del x
            torch.cuda.empty_cache()
    report["prompt"] = prompt_table(args.prompts, (1, 8))
    report["step"] = step_table(args.batches)
    for row in report["step"]:
        print(row, flush=True)
    print_tables(report)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=1)


def print_tables(report: dict) -> None:
    print(f"\n{report['device']}, torch {report['torch']}, triton {report['triton']}, mlstm_kernels "
          f"{report['mlstm_kernels']}; bf16 matmul {report['matmul_tflops']:.0f} TFLOP/s, copy "
          f"{report['copy_tbs']:.2f} TB/s")
    for row in report["sequence"]:
        print(f"\n{row['geometry']} S={row['S']} B={row['B']} ({row['tflop']:.2f} TFLOP forward)")
        print("| kernel | forward (ms) | forward+backward (ms) | forward TFLOP/s (% of matmul) |")
        print("|---|---|---|---|")
        for name, times in row.items():
            if isinstance(times, tuple | list):
                fwd, both = times
                if isinstance(fwd, float):
                    rate = row["tflop"] / fwd * 1e3
                    share = f"{rate:.0f} ({100 * rate / report['matmul_tflops']:.0f}%)"
                else:
                    share = "-"
                cells = [f"{t:.2f}" if isinstance(t, float) else t for t in (fwd, both)]
                print(f"| {name} | {cells[0]} | {cells[1]} | {share} |")
        for pair, diff in row.get("agreement", {}).items():
            print(f"relative difference of h, {pair}: {diff:.1e}")
    print("\n| B | S | " + " | ".join(k for k in report["prompt"][0] if k not in ("B", "S")) + " |")
    print("|---" * len(report["prompt"][0]) + "|")
    for row in report["prompt"]:
        print(f"| {row['B']} | {row['S']} | " + " | ".join(f"{v:.1f}" for k, v in row.items() if k not in ("B", "S"))
              + " |")
    print("\n| B | " + " | ".join(k for k in report["step"][0] if k != "B") + " |")
    print("|---" * len(report["step"][0]) + "|")
    for row in report["step"]:
        print(f"| {row['B']} | " + " | ".join(f"{v:.1f}" for k, v in row.items() if k != "B") + " |")


if __name__ == "__main__":
    main()
