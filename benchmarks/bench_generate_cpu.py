"""Generation on CPU, xLSTM Large ~160M: `xe.generate` against transformers' `xLSTMForCausalLM.generate`.

Both models hold the same weights (transformers writes a checkpoint, xlstm-engine loads it) and run in the same
process on the same cores, greedy, float32, a 32-token prompt and exactly 64 new tokens (no early stop), at B = 1
and B = 8. Also times our transformers class (`xlstm_engine.hf.xLSTMForCausalLM`) through transformers' own
generate loop, and checks that all three produce the same ids. Prints a markdown table; `--json` writes the numbers.

    python benchmarks/bench_generate_cpu.py [--reps 3] [--json benchmarks/out/generate_cpu.json]
"""

import argparse
import json
import platform
import tempfile

import torch
import transformers
from bench_large_cpu import VOCAB, hf_config
from common import timed

import xlstm_engine as xe
from xlstm_engine import hf as xe_hf

PROMPT, NEW = 32, 64


def measure(folder: str, reps: int) -> dict:
    theirs = transformers.xLSTMForCausalLM.from_pretrained(folder).eval()
    ours = xe.xLSTMLarge.from_pretrained(folder).eval()
    ours_hf = xe_hf.xLSTMForCausalLM.from_pretrained(folder).eval()
    # no early stop anywhere: transformers through min_new_tokens, ours without an eos id; BOS added by neither
    hf_kwargs = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=1)
    results = {}
    for B in (1, 8):
        ids = torch.randint(3, VOCAB, (B, PROMPT))
        fns = {
            "transformers": lambda ids=ids: theirs.generate(ids, **hf_kwargs),
            "xlstm-engine": lambda ids=ids: xe.generate(ours, ids, max_new_tokens=NEW, eos_token_id=[],
                                                        add_bos_token=False),
            "xlstm-engine hf class": lambda ids=ids: ours_hf.generate(ids, **hf_kwargs),
        }
        outputs = {name: fn() for name, fn in fns.items()}
        same = {name: bool(torch.equal(out, outputs["transformers"])) for name, out in outputs.items()}
        times = timed(fns, reps)
        results[f"B={B}"] = {name: dict(seconds=t, tokens_per_s=B * NEW / t, same_ids=same[name])
                             for name, t in times.items()}
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        transformers.xLSTMForCausalLM(hf_config()).save_pretrained(folder)
        results = {"generate": measure(folder, args.reps)}
    results["env"] = dict(torch=torch.__version__, transformers=transformers.__version__,
                          xlstm_engine=xe.__version__, threads=torch.get_num_threads(),
                          cpu=platform.processor() or platform.machine(), python=platform.python_version())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print(f"greedy, float32, prompt {PROMPT}, {NEW} new tokens; tokens/s = B x {NEW} / median wall time\n")
    print("| | transformers | xlstm-engine `xe.generate` | ratio | xlstm-engine hf class | ratio | same ids |")
    print("|---|---|---|---|---|---|---|")
    for B, r in results["generate"].items():
        hf, ours, cls = (r[k]["tokens_per_s"] for k in ("transformers", "xlstm-engine", "xlstm-engine hf class"))
        same = all(v["same_ids"] for v in r.values())
        print(f"| {B} (tok/s) | {hf:.1f} | {ours:.1f} | {ours / hf:.2f}x | {cls:.1f} | {cls / hf:.2f}x | {same} |")


if __name__ == "__main__":
    main()
