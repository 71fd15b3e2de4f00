"""How many activation blocks the CPU kernel can fold into one int8 plane, per format.

    .venv/bin/python benchmarks/fold_rate.py [--k 4096] [--rows 64] [--model smollm2]

The packed CPU kernel (plugins/cpu/gemv_avx512.cpp, fold_block) writes each of a block's two
scales as M * 2^E with M odd; the block's values are then v * 2^Emin with integers
v = a * M_side * 2^(E_side - Emin), a twice the E2M1 magnitude. Where every |v| <= 127 the
block is one signed int8 plane and costs half the VPDPBUSDs. This script applies the same
rule to amx_export.formats' quantization of a few distributions and prints the fraction of
blocks that fold, the number that decides how much of the kernel's speed-up a model sees.
With --model, also the inputs of every linear layer of a real model (the bundled SmolLM2, or
a folder `amx_export.models.load_causal_lm` reads) on a short English text.
"""

from __future__ import annotations

import argparse

import numpy as np

from amx_export import formats

DOUBLED = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int64)


def _odd_mantissa(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s = m * 2^e with m odd (s > 0 and finite; other entries give m = 0)."""
    frac, exp = np.frexp(s.astype(np.float64))
    m = np.round(frac * 2.0**53).astype(np.int64)
    e = exp.astype(np.int64) - 53
    zeros = np.zeros_like(m)
    nonzero = m > 0
    low_bit = m & -m  # the lowest set bit of m, as a power of two
    zeros[nonzero] = np.log2(low_bit[nonzero]).astype(np.int64)
    return m >> zeros, e + zeros


def fold_fraction(x: np.ndarray, fmt: str) -> float:
    """The fraction of x's 32-element blocks that fold (x: float32 [rows, k], k % 32 == 0;
    rows whose blocks hold NaN/Inf count as unfolded, as in the kernel)."""
    spec = formats.get(fmt)
    q = formats.quantize(x, fmt)
    codes = np.asarray(q.codes)
    nibbles = np.stack([codes & 0xF, codes >> 4], -1).reshape(x.shape[0], -1, 32)
    a = DOUBLED[nibbles]
    table = np.asarray(spec.scale_format.values, np.float64)
    scales = table[np.asarray(q.scales)]
    sp, sn = scales[..., 0], scales[..., -1]
    has_p, has_n = (a > 0).any(-1), (a < 0).any(-1)
    top_p = np.where(a > 0, a, 0).max(-1)
    top_n = np.where(a < 0, -a, 0).max(-1)
    mp, ep = _odd_mantissa(np.where(has_p, sp, 1.0))
    mn, en = _odd_mantissa(np.where(has_n, sn, 1.0))
    emin = np.where(has_p & has_n, np.minimum(ep, en), np.where(has_p, ep, en))
    factor_p = np.where(has_p, mp * 2.0 ** (ep - emin), 0)
    factor_n = np.where(has_n, mn * 2.0 ** (en - emin), 0)
    fits = np.maximum(top_p * factor_p, top_n * factor_n) <= 127
    return float((fits & np.isfinite(sp) & np.isfinite(sn)).mean())


TEXT = (
    "The history of the printing press begins in the fifteenth century, when movable type "
    "made books cheap enough for ordinary readers. Within fifty years, presses had spread "
    "to more than two hundred cities, and the number of books in Europe grew into millions."
)


def linear_inputs(source: str) -> np.ndarray:
    """Every 32-value block of every linear layer's input on TEXT, as rows of 32."""
    import torch

    from amx_export.models import load_causal_lm

    model, tokenizer = load_causal_lm(source)
    blocks = []

    def keep(module, args):
        x = args[0].detach().float().reshape(-1, args[0].shape[-1]).numpy()
        if x.shape[1] % 32 == 0:
            blocks.append(x.reshape(-1, 32))

    hooks = [m.register_forward_pre_hook(keep) for m in model.modules()
             if isinstance(m, torch.nn.Linear)]  # fmt: skip
    with torch.no_grad():
        model(**tokenizer(TEXT, return_tensors="pt"))
    for hook in hooks:
        hook.remove()
    return np.concatenate(blocks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=4096, help="values per row (multiple of 32)")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--model", help="also a real model's linear-layer inputs (smollm2)")
    args = parser.parse_args()
    if args.k % 32:
        parser.error("--k must be a multiple of 32")
    rng = np.random.default_rng(0)
    shape = (args.rows, args.k)
    data = {
        "Gaussian": rng.standard_normal(shape),
        "Laplace": rng.laplace(size=shape),
        "Student-t(3)": rng.standard_t(3, shape),
    }
    if args.model:
        data[f"{args.model} linear inputs"] = linear_inputs(args.model)
    fmts = [f for f in formats.names() if formats.get(f).block_size == 32]
    print("| distribution | " + " | ".join(fmts) + " |")
    print("|---|" + "---:|" * len(fmts))
    for name, x in data.items():
        cells = [f"{fold_fraction(x.astype(np.float32), f):.0%}" for f in fmts]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
