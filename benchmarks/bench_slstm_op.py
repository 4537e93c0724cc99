"""The sLSTM op on CPU, forward + backward: the fast path against the naive loop and the official xlstm package.

The official one is `xlstm.blocks.slstm.src.vanilla.slstm_forward` (the "vanilla" backend of `xlstm`)
differentiated by autograd, fed the same values in its own layout. Prints a markdown table.

    python benchmarks/bench_slstm_op.py [--reps 5] [--threads 2] [--function slstm] [--doc-len 64]

With --doc-len, our op gets resets (packed documents) at random document starts, about one per doc-len tokens
per row (the others still run on unpacked sequences).
"""

import argparse

import torch
from common import timed

from xlstm_engine.ops.slstm import slstm, sLSTMState


def official(function: str):
    """The official vanilla sLSTM as a function of our layout, or None if xlstm is not installed."""
    try:
        from xlstm.blocks.slstm.src.vanilla import slstm_forward, slstm_pointwise_function_registry
    except ImportError:
        return None

    def run(x, R, state):
        B, S, _, H, D = x.shape
        xo = x.permute(1, 0, 2, 3, 4).reshape(S, B, 4 * H * D)  # [S, B, (gate, head, dh)]
        Ro = R.permute(0, 2, 3, 1).reshape(H, 4 * D, D)  # R_int[h, g D + j, k] = R[h, k, g, j]
        states = torch.stack([t.reshape(B, H * D) for t in state][: 4 if function == "slstm" else 2])
        all_states, last, _ = slstm_forward(xo, states, Ro, x.new_zeros(4 * H * D),
                                            slstm_pointwise_function_registry[function])
        return all_states[0, 1:].view(S, B, H, D).transpose(0, 1), last

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--function", default="slstm", choices=["slstm", "lstm"])
    parser.add_argument("--no-naive", action="store_true", help="skip the (slow) naive loop")
    parser.add_argument("--no-official", action="store_true", help="skip the official package")
    parser.add_argument("--doc-len", type=float, default=None, help="resets for ours: mean document length")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    oracle = None if args.no_official else official(args.function)
    packed = "" if args.doc_len is None else f", resets every ~{args.doc_len:g} tokens"
    print(f"sLSTM op ({args.function}{packed}), CPU, {args.threads} threads, float32, forward + backward, median of "
          f"{args.reps}; times in ms\n")
    print("| B | S | H | D | recurrent | naive | official vanilla | naive / recurrent | official / recurrent |")
    print("|---|---|---|---|---|---|---|---|---|")
    for B, S, H, D in [(8, 256, 4, 32), (8, 1024, 4, 32), (16, 256, 4, 64), (16, 2048, 4, 16)]:
        x = torch.randn(B, S, 4, H, D, requires_grad=True)
        R = (torch.randn(H, D, 4, D) / D**0.5).requires_grad_()
        state = sLSTMState.zeros(B, H, D)
        resets = None if args.doc_len is None else torch.rand(B, S) < 1.0 / args.doc_len

        def ours(backend, x=x, R=R, resets=resets):
            h, s = slstm(x, R, output_final_state=True, backend=backend, function=args.function, resets=resets)
            (h.sum() + s.c.sum()).backward()

        def theirs(x=x, R=R, state=state):
            h, last = oracle(x, R, state)
            (h.sum() + last[1].sum()).backward()

        fns = {"recurrent": lambda: ours("recurrent")}
        if not args.no_naive:
            fns["naive"] = lambda: ours("naive")
        if oracle is not None:
            fns["official"] = theirs
        t = timed(fns, args.reps)
        ms = {name: f"{1e3 * v:.1f}" for name, v in t.items()}
        ratio = {name: f"{v / t['recurrent']:.1f}x" for name, v in t.items()}
        print(f"| {B} | {S} | {H} | {D} | {ms['recurrent']} | {ms.get('naive', '-')} | {ms.get('official', '-')} "
              f"| {ratio.get('naive', '-')} | {ratio.get('official', '-')} |")


if __name__ == "__main__":
    main()
