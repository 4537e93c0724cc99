"""The NeurIPS xLSTM on CPU: xlstm-engine against the official `xlstm` package (vanilla sLSTM), same weights.

Forward+backward tokens/s of a small mixed stack, and of mLSTM-only and sLSTM-only stacks of the same size
(to separate the two block types), at S = 256 and S = 2048 with B*S = 4096 tokens; the official model gets
context_length = S. Peak memory of forward+backward at S = 2048 is measured in a fresh process per model.

    python benchmarks/bench_neurips_cpu.py [--reps 3] [--json benchmarks/out/neurips_cpu.json]
"""

import argparse
import json
import platform
import subprocess
import sys

import torch
import xlstm
from common import timed

import xlstm_engine as xe

E, HEADS, TOKENS = 128, 4, 4096
KINDS = {"mixed": dict(num_blocks=4, slstm_at=[1, 3]), "mLSTM": dict(num_blocks=2, slstm_at=[]),
         "sLSTM": dict(num_blocks=2, slstm_at=[0, 1])}


def config(ns, kind: str, S: int):
    return ns.xLSTMBlockStackConfig(
        mlstm_block=ns.mLSTMBlockConfig(mlstm=ns.mLSTMLayerConfig(num_heads=HEADS)),
        slstm_block=ns.sLSTMBlockConfig(slstm=ns.sLSTMLayerConfig(backend="vanilla", num_heads=HEADS),
                                        feedforward=ns.FeedForwardConfig(proj_factor=1.3, act_fn="gelu")),
        context_length=S, embedding_dim=E, **KINDS[kind])


def models(kind: str, S: int):
    torch.manual_seed(0)
    official = xlstm.xLSTMBlockStack(config(xlstm, kind, S))
    ours = xe.xLSTMBlockStack(config(xe, kind, S))
    ours.load_state_dict(official.state_dict(), strict=True)
    return {"official": official, "xlstm-engine": ours}


def fwd_bwd(model, x):
    model(x).square().mean().backward()


def speed(reps: int) -> dict:
    results = {}
    for S in (256, 2048):
        x = torch.randn(TOKENS // S, S, E, requires_grad=True)
        for kind in KINDS:
            pair = models(kind, S)
            with torch.no_grad():
                err = ((pair["official"](x) - pair["xlstm-engine"](x)).norm() / pair["official"](x).norm()).item()
            median = timed({name: lambda m=model, x=x: fwd_bwd(m, x) for name, model in pair.items()}, reps)
            results[f"{kind}@{S}"] = {name: TOKENS / t for name, t in median.items()}
            results[f"{kind}@{S}"]["rel_err"] = err
            print(kind, S, results[f"{kind}@{S}"], flush=True)
    return results


MEMORY_PROBE = """
import sys, torch
sys.path.insert(0, "benchmarks")
from bench_neurips_cpu import models, E, TOKENS
from common import proc_status, reset_peak_memory
S = 2048
model = models("mixed", S)[sys.argv[1]]
x = torch.randn(TOKENS // S, S, E, requires_grad=True)
model(x[:, :64]).sum().backward()
reset_peak_memory()
base = proc_status("VmRSS")
model(x).square().mean().backward()
print(proc_status("VmHWM") - base)
"""


def peak_memory(name: str) -> int:
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, name], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = {"speed": speed(args.reps), "memory": {name: peak_memory(name) for name in ("official", "xlstm-engine")}}
    results["env"] = dict(torch=torch.__version__, xlstm=xlstm.__version__ if hasattr(xlstm, "__version__") else "?",
                          threads=torch.get_num_threads(), python=platform.python_version())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print("\n| fwd+bwd tokens/s | official | xlstm-engine | speed-up | rel. output diff |")
    print("|---|---|---|---|---|")
    for key, r in results["speed"].items():
        kind, S = key.split("@")
        print(f"| {kind} blocks, S={S}, B={TOKENS // int(S)} | {r['official']:.0f} | {r['xlstm-engine']:.0f} | "
              f"{r['xlstm-engine'] / r['official']:.2f}x | {r['rel_err']:.1e} |")
    m = results["memory"]
    print(f"\npeak memory of fwd+bwd, mixed, S=2048, B=2: official {m['official'] / 2**20:.0f} MiB, "
          f"xlstm-engine {m['xlstm-engine'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
