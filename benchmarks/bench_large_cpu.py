"""xLSTM Large (~160M parameters) on CPU: xlstm-engine against transformers' native xLSTMForCausalLM.

Both models hold the same weights (transformers writes a checkpoint, xlstm-engine loads it) and run in the same
process on the same cores. Measures prefill of 512 and 4096 tokens, one decode step, and the peak memory of a
prefill of 4k and 16k tokens (each in a fresh subprocess). Prints a markdown table; `--json` writes the numbers.

    python benchmarks/bench_large_cpu.py [--reps 5] [--json benchmarks/out/large_cpu.json]
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile

import torch
import transformers
from common import timed

import xlstm_engine as xe

VOCAB = 50304


def hf_config():
    c = xe.PRESETS["160m"]
    return transformers.xLSTMConfig(hidden_size=c["embedding_dim"], num_hidden_layers=c["num_blocks"],
                                    num_heads=c["num_heads"], vocab_size=c["vocab_size"])


def speed(folder: str, reps: int) -> dict:
    hf = transformers.xLSTMForCausalLM.from_pretrained(folder).eval()
    ours = xe.xLSTMLarge.from_pretrained(folder)
    results = {}
    with torch.no_grad():
        for S in (512, 4096):
            ids = torch.randint(0, VOCAB, (1, S))
            err = (hf(ids, use_cache=True).logits - ours(ids)[0]).abs().max().item()
            results[f"prefill_{S}"] = timed({
                "transformers": lambda ids=ids: hf(ids, use_cache=True),
                "xlstm-engine": lambda ids=ids: ours(ids),
                "xlstm-engine (last logits)": lambda ids=ids: ours(ids, logits_to_keep=1),
            }, reps if S == 512 else max(reps // 2, 2))
            results[f"prefill_{S}"]["max |logit diff|"] = err
        prompt, token = torch.randint(0, VOCAB, (1, 64)), torch.randint(0, VOCAB, (1, 1))
        cache = hf(prompt, use_cache=True).cache_params
        _, state = ours(prompt)
        results["decode"] = timed({
            "transformers": lambda: hf(token, cache_params=cache, use_cache=True),
            "xlstm-engine": lambda: ours(token, state=state),
        }, reps * 6)
    return results


# A fresh process per measurement: the peak resident memory of one prefill, above the loaded model
MEMORY_PROBE = """
import sys, torch, transformers, xlstm_engine as xe
sys.path.insert(0, "benchmarks")
from common import proc_status, reset_peak_memory
folder, impl, S = sys.argv[1], sys.argv[2], int(sys.argv[3])
if impl == "transformers":
    model = transformers.xLSTMForCausalLM.from_pretrained(folder).eval()
    run = lambda ids: model(ids, use_cache=True)
else:
    model = xe.xLSTMLarge.from_pretrained(folder)
    run = (lambda ids: model(ids, logits_to_keep=1)) if impl.endswith("last") else (lambda ids: model(ids))
with torch.no_grad():
    run(torch.randint(0, 50304, (1, 64)))
    ids = torch.randint(0, 50304, (1, S))
    reset_peak_memory()
    base = proc_status("VmRSS")
    run(ids)
    print(proc_status("VmHWM") - base)
"""


def peak_memory(folder: str, impl: str, S: int) -> int:
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, folder, impl, str(S)], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.split()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        transformers.xLSTMForCausalLM(hf_config()).save_pretrained(folder)
        results = {"speed": speed(folder, args.reps), "memory": {}}
        for impl in ("transformers", "xlstm-engine", "xlstm-engine-last"):
            for S in (4096, 16384):
                results["memory"][f"{impl}@{S}"] = peak_memory(folder, impl, S)
    results["env"] = dict(torch=torch.__version__, transformers=transformers.__version__,
                          xlstm_engine=xe.__version__, threads=torch.get_num_threads(),
                          cpu=platform.processor() or platform.machine(), python=platform.python_version())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print_tables(results)


def print_tables(r):
    s = r["speed"]
    print("| | transformers | xlstm-engine | ratio | xlstm-engine, last logits only | ratio |")
    print("|---|---|---|---|---|---|")
    for S in (512, 4096):
        t = s[f"prefill_{S}"]
        hf, ours, last = t["transformers"], t["xlstm-engine"], t["xlstm-engine (last logits)"]
        print(f"| prefill B=1, S={S} (s) | {hf:.3f} | {ours:.3f} | {hf / ours:.2f}x | {last:.3f} | {hf / last:.2f}x |")
    d = s["decode"]
    print(f"| decode step B=1 (ms) | {d['transformers'] * 1e3:.1f} | {d['xlstm-engine'] * 1e3:.1f} | "
          f"{d['transformers'] / d['xlstm-engine']:.2f}x | | |")
    m = r["memory"]
    print("\n| peak memory above the model, one prefill (MiB) | S=4096 | S=16384 | 16k / 4k |")
    print("|---|---|---|---|")
    for impl in ("transformers", "xlstm-engine", "xlstm-engine-last"):
        a, b = m[f"{impl}@4096"] / 2**20, m[f"{impl}@16384"] / 2**20
        print(f"| {impl} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
    print(f"\nmax |logit diff| vs transformers: S=512 {s['prefill_512']['max |logit diff|']:.1e}, "
          f"S=4096 {s['prefill_4096']['max |logit diff|']:.1e}")


if __name__ == "__main__":
    main()
