"""The C++ CPU kernels against amx_export.formats: codes and scales bit for bit, matmul
within float32 accumulation error, on random, adversarial and edge-case inputs."""

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from kernel_checks import edge_cases, expected_matmul, extreme_weights, selected_isa

from amx_export import formats
from amx_export.formats.minifloat import E2M1
from amx_export.plugins.native import NativeError

FORMATS = formats.names()
PACKED_FORMATS = ["amxfp4", "amxfp4-e4m3", "amxfp4-e8m0", "mxfp4"]  # 32-element blocks
# every kernel tier (a test skips those this CPU lacks); all but portable have packed kernels
TIERS = ["avx512-vnni", "avx-vnni", "avx2", "portable"]
PACKED_TIERS = TIERS[:-1]


def _within_float32_sum_error(got, expected, bound, k: int) -> bool:
    """|got - expected| within a k-term float32 sum's error bound, plus float32's rounding
    unit at the bottom of its range: outputs here reach 1e-40, where any larger absolute
    slack would hide a lost block."""
    eps = np.finfo(np.float32).eps
    return bool(np.all(np.abs(got - expected) <= eps * k * bound + k * 2.0**-149))


def _assert_same_quantization(x, fmt, kernels):
    expected, got = formats.quantize(x, fmt), kernels.quantize(x, fmt)
    np.testing.assert_array_equal(got.codes, expected.codes)
    np.testing.assert_array_equal(got.scales, expected.scales)
    if expected.tensor_scale is not None:
        assert np.float32(got.tensor_scale) == np.float32(expected.tensor_scale)
    np.testing.assert_array_equal(kernels.fake_quant(x, fmt), formats.fake_quant(x, fmt))
    k = x.shape[-1]
    np.testing.assert_array_equal(
        kernels.dequantize(expected, fmt, k), formats.dequantize(expected, fmt, k=k)
    )


@pytest.mark.parametrize("isa", TIERS)  # each tier's quantizer (vector or scalar)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("k", [1, 16, 17, 32, 33, 100, 576])
def test_quantize_edge_cases_bit_exact(kernels, isa, fmt, k):
    with selected_isa(kernels, isa):
        rng = np.random.default_rng(k)
        x = edge_cases(rng, k)
        if formats.get(fmt).tensor_scale:  # NVFP4's g is per tensor: rows one by one too
            for row in x:
                _assert_same_quantization(row[None], fmt, kernels)
        _assert_same_quantization(x, fmt, kernels)


@pytest.mark.parametrize("isa", TIERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_every_float_near_the_rounding_boundaries(kernels, isa, fmt):
    # values a few ulps around every E2M1 midpoint and grid point, times a block scale
    grid = np.concatenate([E2M1.midpoints, E2M1.values[E2M1.values >= 0]]).astype(np.float32)
    ulps = np.arange(-4, 5, dtype=np.int32)
    near = (grid.view(np.int32)[:, None] + ulps).reshape(-1).view(np.float32)
    near = near[np.isfinite(near) & (near >= 0)]
    x = np.concatenate([near, -near, [6.0, -6.0]]).astype(np.float32)
    x = np.resize(x, (x.size // 30 + 1) * 32).reshape(-1, 32)
    x[:, 31] = 6.0  # pins the positive scale to 1: the grid values are exact E2M1 inputs
    with selected_isa(kernels, isa):
        for scale in (1.0, 0.75, 3e-5, 2.0**-20, 1.5e4):
            _assert_same_quantization(x * np.float32(scale), fmt, kernels)


@pytest.mark.parametrize("isa", TIERS)  # SSE lanes and scalar code
@pytest.mark.parametrize("fmt", [f for f in FORMATS if not formats.get(f).tensor_scale])
def test_scale_codes_at_every_rounding_midpoint_and_any_exponent(kernels, isa, fmt):
    # block extremes one ulp around each midpoint between two scale values (times 6 for the
    # minifloat rule, whose scale input is max / 6), and at random bit patterns over the whole
    # finite float32 range
    spec = formats.get(fmt)
    values = np.asarray(spec.scale_format.values, np.float64)
    values = np.unique(values[np.isfinite(values) & (values > 0)])
    mids = ((values[1:] + values[:-1]) / 2 * (6 if spec.rule == "minifloat" else 1)).astype(
        np.float32
    )
    mids = mids[np.isfinite(mids)]
    rng = np.random.default_rng(21)
    random = rng.integers(1, 0x7F800000, 4096, dtype=np.int64).astype(np.uint32).view(np.float32)
    peaks = np.concatenate([np.nextafter(mids, 0), mids, np.nextafter(mids, np.inf), random])
    x = rng.uniform(-1, 1, (peaks.size, 32)).astype(np.float32) * peaks[:, None] / 2
    x[:, 0] = peaks
    x[:, 1] = -peaks[::-1]  # the negative side at other midpoints
    with selected_isa(kernels, isa):
        _assert_same_quantization(x.astype(np.float32), fmt, kernels)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=70),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    ),
    st.sampled_from(FORMATS),
)
def test_quantize_any_float32_bit_exact(kernels, x, fmt):
    default = kernels.isa()
    try:
        for isa in TIERS[TIERS.index(default) :]:  # this CPU's tiers
            with contextlib.suppress(NativeError):
                kernels.set_isa(isa)
                _assert_same_quantization(x, fmt, kernels)
    finally:
        kernels.set_isa(default)


@pytest.mark.parametrize("isa", TIERS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("weights_only", [False, True], ids=["w4a4", "w4a16"])
def test_matmul_is_fake_quant_x_times_dequant_w(kernels, isa, fmt, weights_only):
    with selected_isa(kernels, isa):
        rng = np.random.default_rng(7)
        for m, k, n in [(1, 100, 37), (3, 576, 64), (8, 33, 16), (9, 17, 5), (64, 256, 48)]:
            x = rng.standard_normal((m, k)).astype(np.float32)
            x[:, ::29] *= 40  # outlier channels
            q = formats.quantize(rng.standard_normal((n, k)).astype(np.float32), fmt)
            bias = rng.standard_normal(n).astype(np.float32) if m % 2 else None
            act = None if weights_only else fmt
            expected, bound = expected_matmul(x, q, fmt, act, k, bias)
            for run in (kernels.matmul, kernels.matmul_packed):
                got = run(x, q, fmt, act, bias)
                assert _within_float32_sum_error(got, expected, bound, k), (m, k, n, run)


@pytest.mark.parametrize("isa", TIERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_weight_only_rows_decoded_in_registers(kernels, isa, fmt):
    # W4A16 decodes each weight row in registers (chunks of 8 rows, runs of 16 weight rows)
    # while X has at most 2^18 elements, else through float32 panels: every chunk size, both
    # sides of that limit (K = 4100: 63 and 65 rows), K with short last slices and blocks, N
    # past a run of 16. Ordinary weights
    # with one NaN block (its row is NaN) against every edge-case activation row (NaN, Inf,
    # tiny, huge: unquantized here); extreme, one-signed weights against activations near
    # 2^10 (every product and sum a normal float32, see extreme_weights)
    rng = np.random.default_rng(17)
    # (NaN rows in the reference; extreme_weights' products overflow to Inf in some rows)
    with selected_isa(kernels, isa), np.errstate(invalid="ignore", over="ignore"):
        for k, n in [(1, 3), (12, 17), (33, 40), (100, 9), (576, 35), (4100, 18)]:
            ordinary = rng.standard_normal((n, k)).astype(np.float32)
            ordinary[n // 2, k // 2] = np.nan
            edge = edge_cases(rng, k)
            plain = rng.standard_normal((65, k)).astype(np.float32)
            cases = [
                (ordinary, np.concatenate([edge, plain])),
                (extreme_weights(rng, n, k), plain * np.float32(2.0) ** 10),
            ]
            bias = rng.standard_normal(n).astype(np.float32)
            for w, pool in cases:
                q = formats.quantize(w, fmt)
                rows = (1, 2, 3, 5, 8, 9, 15, 17, 49) if k < 4100 else (1, 63, 65)
                for m in rows:
                    x = pool[rng.permutation(len(pool))[:m]]
                    expected, bound = expected_matmul(x, q, fmt, None, k, bias)
                    bound += np.abs(bias)  # the bias is one more term of the sum
                    for run in (kernels.matmul, kernels.matmul_packed):
                        _assert_matmul_matches(run(x, q, fmt, None, bias), expected, bound,
                                               k + 1, (k, n, m, run.__name__))  # fmt: skip


def test_matmul_batched_3d_and_nan_propagation(kernels):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 64)).astype(np.float32)
    x[1, 2, 10] = np.nan
    q = formats.quantize(rng.standard_normal((12, 64)).astype(np.float32), "amxfp4")
    y = kernels.matmul(x, q, "amxfp4", "amxfp4")
    assert y.shape == (2, 5, 12)
    assert np.isnan(y[1, 2]).all() and np.isfinite(np.delete(y.reshape(10, 12), 7, 0)).all()


def test_bad_arguments_are_reported(kernels):
    x = np.ones((2, 32), np.float32)
    y = np.empty_like(x)
    lib = kernels.lib
    assert lib.amx_cpu_fake_quant(b"int3", x, 2, 32, y) == 1
    assert b"unknown format" in lib.amx_cpu_error_string(1)
    assert lib.amx_cpu_fake_quant(b"amxfp4", x, 0, 32, y) == 2
    assert lib.amx_cpu_set_isa(b"sse9") == 3


def _assert_matmul_matches(got, expected, bound, k, what):
    # a NaN input's NaN comes out; no other NaN where no partial sum, in any order, can pass
    # float32's range (past it, +Inf and -Inf partial sums make a NaN in some orders: the
    # kernels sum in different orders)
    nan = np.isnan(expected)
    assert np.isnan(got[nan]).all(), what
    safe = ~nan & (bound < np.finfo(np.float32).max / 2)
    assert not np.isnan(got[safe]).any(), what
    finite = safe & (np.abs(expected) < 1e37)  # float32 range
    assert _within_float32_sum_error(got[finite], expected[finite], bound[finite], k), what


@pytest.mark.parametrize("isa", PACKED_TIERS)
@pytest.mark.parametrize("fmt", PACKED_FORMATS)
def test_packed_single_row_edge_cases(kernels, isa, fmt):
    # M = 1 (decode) on each tier's packed kernel, one edge-case row at a time: zero,
    # one-signed, tie, tiny, huge and NaN/Inf blocks
    rng = np.random.default_rng(11)
    k, n = 576, 40
    q = formats.quantize(rng.standard_normal((n, k)).astype(np.float32), fmt)
    rows = np.concatenate([edge_cases(rng, k), rng.standard_normal((8, k)).astype(np.float32)])
    with selected_isa(kernels, isa):
        for i, row in enumerate(rows):
            x = row[None]
            expected, bound = expected_matmul(x, q, fmt, fmt, k, None)
            _assert_matmul_matches(kernels.matmul_packed(x, q, fmt, fmt), expected, bound, k, i)


@pytest.mark.parametrize("isa", PACKED_TIERS)
@pytest.mark.parametrize("fmt", PACKED_FORMATS)
def test_packed_every_row_count_and_ragged_shapes(kernels, isa, fmt):
    # the one-row and the row-tile kernels (M = 65: a last row tile of one row, which takes
    # the row tiles' path); K with a short last block and N not a multiple of a group's 8 or
    # 16 rows; every edge-case row among ordinary ones, with a bias
    rng = np.random.default_rng(14)
    for k, n in [(33, 9), (100, 37), (576, 16), (1000, 70)]:
        q = formats.quantize(rng.standard_normal((n, k)).astype(np.float32), fmt)
        bias = rng.standard_normal(n).astype(np.float32)
        pool = np.concatenate([edge_cases(rng, k), rng.standard_normal((33, k)).astype(np.float32)])
        with selected_isa(kernels, isa):
            assert kernels.isa() == isa
            # (M = 65's rows from their own generator: the others' draws stay as they were)
            tall = pool[np.random.default_rng(k).integers(0, len(pool), 65)]
            for m in (1, 3, 8, 16, 33, 65):
                x = tall if m == 65 else pool[rng.permutation(len(pool))[:m]]
                expected, bound = expected_matmul(x, q, fmt, fmt, k, bias)
                for run in (kernels.matmul_packed, kernels.matmul):
                    _assert_matmul_matches(run(x, q, fmt, fmt, bias), expected, bound, k,
                                           (k, n, m, run.__name__))  # fmt: skip


def _two_sided_blocks(rng, rows: int, k: int) -> np.ndarray:
    """Rows whose blocks put their positive and negative extremes up to 7 binades apart, with
    extremes of every mantissa: the packed kernel folds a block's two scales into one where
    its values then fit an int8 (|v| <= 127), and these land on both sides of that limit."""
    x = rng.uniform(-1, 1, (rows, k // 32, 32)).astype(np.float32)
    extreme = rng.choice(np.arange(4.0, 8.0, 0.25), (rows, k // 32, 2))
    apart = rng.integers(-7, 8, (rows, k // 32))
    x[..., 0] = extreme[..., 0] * np.float32(2.0) ** apart
    x[..., 1] = -extreme[..., 1]
    x[..., 2:] *= np.minimum(x[..., :1], -x[..., 1:2]) / 2  # below both extremes
    return x.reshape(rows, k)


@pytest.mark.parametrize("isa", PACKED_TIERS)
@pytest.mark.parametrize("fmt", PACKED_FORMATS)
def test_packed_decode_folds_both_sides_of_the_int8_limit(kernels, isa, fmt):
    rng = np.random.default_rng(12)
    k, n = 2048, 48
    q = formats.quantize(rng.standard_normal((n, k)).astype(np.float32), fmt)
    x = _two_sided_blocks(rng, 86, k)
    with selected_isa(kernels, isa):
        for i, row in enumerate(x[:4]):  # M = 1, the decode step
            expected, bound = expected_matmul(row[None], q, fmt, fmt, k, None)
            got = kernels.matmul_packed(row[None], q, fmt, fmt)
            assert _within_float32_sum_error(got, expected, bound, k), i
        # every row count of the AVX-512 kernel's templates (16, 8, then 1 to 7), two 64-row
        # tiles
        for m in (86, 15, 13, 12, 3, 2):
            expected, bound = expected_matmul(x[:m], q, fmt, fmt, k, None)
            got = kernels.matmul_packed(x[:m], q, fmt, fmt)
            assert _within_float32_sum_error(got, expected, bound, k), m


@pytest.mark.parametrize("isa", PACKED_TIERS)
@pytest.mark.parametrize("fmt", PACKED_FORMATS)
def test_packed_weights_with_extreme_and_nan_scales(kernels, isa, fmt):
    # the packed layout keeps scale codes as bytes a shift turns into floats; codes with no
    # such form (E4M3 and E8M0 NaN, E8M0's 2^-127) send the weights to the unpacked path
    rng = np.random.default_rng(13)
    k, n = 300, 24
    w = extreme_weights(rng, n, k)
    with_nan = w.copy()
    with_nan[5, 70] = np.nan
    with selected_isa(kernels, isa):
        for weights in (w, with_nan):
            q = formats.quantize(weights, fmt)
            for m in (1, 5):
                x = rng.standard_normal((m, k)).astype(np.float32) * np.float32(2.0**10)
                expected, bound = expected_matmul(x, q, fmt, fmt, k, None)
                got = kernels.matmul_packed(x, q, fmt, fmt)
                np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
                finite = np.isfinite(expected)
                assert _within_float32_sum_error(got[finite], expected[finite], bound[finite], k)


@pytest.mark.parametrize("isa", PACKED_TIERS)
@pytest.mark.parametrize("fmt", ["amxfp4", "amxfp4-e8m0"])
def test_packed_row_tiles_at_the_int16_bounds(kernels, isa, fmt):
    # The 256-bit kernels add a block's VPMADDUBSW pair sums in int16 lanes before widening
    # them: blocks folding to +-120 against weights all of one sign and the largest magnitude
    # reach the lanes' largest sums (one row and row tiles; every sign combination).
    k, n = 256, 24
    block = np.full(32, 7.5, np.float32)  # scales 1.25 and 0.125 fold with factors 10 and 1
    block[5] = -0.75
    x = np.stack([np.tile(block, k // 32), np.tile(-block, k // 32)] * 9)
    w = np.ones((n, k), np.float32)
    w[n // 2 :] = -1.0
    w[:, 3::32] *= -0.5  # a second weight scale on the other side
    q = formats.quantize(w, fmt)
    with selected_isa(kernels, isa):
        for m in (1, 2, 3, 16, 18):
            expected, bound = expected_matmul(x[:m], q, fmt, fmt, k, None)
            got = kernels.matmul_packed(x[:m], q, fmt, fmt)
            assert _within_float32_sum_error(got, expected, bound, k), m
            assert np.abs(expected).max() > 1e3  # the blocks did reach the large values


@pytest.mark.parametrize("isa", PACKED_TIERS)
@pytest.mark.parametrize("fmt", ["amxfp4", "amxfp4-e4m3", "amxfp4-e8m0"])  # two scales
def test_packed_row_tiles_every_operand_count(kernels, isa, fmt):
    # The 256-bit row tiles take a block's operand rows (one per folded row, two per split
    # one) in chunks of up to 5 (AVX2) or 6 (AVX-VNNI; 8 for its folded weight blocks) of
    # sizes one apart: block b of an
    # M-row input has its first b rows split, so the blocks hold every count from M to 2M
    # (2 to 24 over these M; with one scale a block never splits)
    rng = np.random.default_rng(16)
    n = 24
    for m in (2, 3, 4, 5, 6, 12):
        nb = m + 1
        k = nb * 32
        q = formats.quantize(rng.standard_normal((n, k)).astype(np.float32), fmt)
        x = rng.uniform(-1, 1, (m, nb, 32)).astype(np.float32)
        x[..., 0], x[..., 1] = 6.0, -6.0  # both scales alike: the block folds
        for b in range(nb):
            x[:b, b, 0] = 96.0  # 12 x 16 > 127: it stays split
        x = x.reshape(m, k)
        with selected_isa(kernels, isa):
            expected, bound = expected_matmul(x, q, fmt, fmt, k, None)
            got = kernels.matmul_packed(x, q, fmt, fmt)
        assert _within_float32_sum_error(got, expected, bound, k), m


@pytest.mark.parametrize("isa", PACKED_TIERS)
@pytest.mark.parametrize("fmt", PACKED_FORMATS)
def test_packed_one_row_runs_between_split_blocks(kernels, isa, fmt):
    # M = 1 takes the folded blocks in runs (two a step, an odd one alone) with each split
    # block between them out of line: split blocks first, last, adjacent, alone, and runs of
    # every length from 0 to 5 around them
    rng = np.random.default_rng(15)
    patterns = [[0], [12], [0, 1], [11, 12], [1, 3, 6, 10], [0, 2, 5, 9, 12], [], list(range(13))]
    k, n = 13 * 32, 24
    q = formats.quantize(rng.standard_normal((n, k)).astype(np.float32), fmt)
    with selected_isa(kernels, isa):
        for split in patterns:
            x = rng.uniform(-1, 1, (13, 32)).astype(np.float32)
            x[:, 0], x[:, 1] = 6.0, -6.0  # both scales alike: the block folds
            x[split, 0] = 96.0  # 16 times the negative scale: 12 x 16 > 127, it stays split
            x = x.reshape(1, k)
            expected, bound = expected_matmul(x, q, fmt, fmt, k, None)
            got = kernels.matmul_packed(x, q, fmt, fmt)
            assert _within_float32_sum_error(got, expected, bound, k), split


def _assert_packed_matches(kernels, x, q, fmt: str, k: int, rows) -> None:
    """The packed kernel on the first m rows of x, for each m, within float32 summation."""
    for m in rows:
        expected, bound = expected_matmul(x[:m], q, fmt, fmt, k, None)
        got = kernels.matmul_packed(x[:m], q, fmt, fmt)
        assert _within_float32_sum_error(got, expected, bound, k), m


def _weight_block_folds(q, fmt: str) -> np.ndarray:
    """[groups of 8 rows, blocks]: whether every row of the block has its two scales written
    fp x c and fn x c (c the largest power of two dividing both) with every doubled magnitude
    times its side's factor at most 127: AVX-VNNI's one-plane weight blocks, and their
    largest |folded value| (0 where the block stays two planes)."""
    spec = formats.get(fmt)
    n, nb = q.scales.shape[:2]
    scales = spec.scale_format.decode(q.scales).astype(np.float64)  # [n, nb, 2]
    codes = np.stack([q.codes & 0xF, q.codes >> 4], -1).reshape(n, nb, 32)
    doubled = np.array([0, 1, 2, 3, 4, 6, 8, 12])[codes & 7]
    top = np.stack([np.where(codes < 8, doubled, 0).max(-1),
                    np.where(codes >= 8, doubled, 0).max(-1)], -1)  # [n, nb, 2]
    present = top > 0
    with np.errstate(all="ignore"):
        mantissa, exponent = np.frexp(scales)
        odd = (mantissa * 2.0**24).astype(np.int64)
        low = 2.0 ** (exponent - 24 + np.log2(odd & -odd))  # its lowest set bit's value
    ok = np.isfinite(scales).all(-1) & np.all(~present | (scales > 0), -1)
    c = np.where(present, low, np.inf).min(-1)
    c = np.where(np.isinf(c), 1.0, c)
    with np.errstate(all="ignore"):
        factors = np.where(present, np.minimum(scales / c[..., None], 255), 0)
    values = (factors * top).max(-1)
    ok &= np.all(factors * top <= 127, -1) & (c >= 2.0**-126) & (c < 2.0**128)
    groups = (n + 7) // 8
    fold = np.ones((groups * 8, nb), bool)
    fold[:n] = ok
    largest = np.zeros((groups * 8, nb))
    largest[:n] = values
    fold = fold.reshape(groups, 8, nb).all(1)
    return fold, np.where(fold, largest.reshape(groups, 8, nb).max(1), 0)


@pytest.mark.parametrize("isa", PACKED_TIERS)
@pytest.mark.parametrize("fmt", ["amxfp4", "amxfp4-e4m3", "amxfp4-e8m0"])  # two scales
def test_packed_row_tiles_weight_blocks_fold_and_not(kernels, isa, fmt):
    # AVX-VNNI's row tiles fold a weight block's two scales into one plane where every row of
    # its group allows it (v + 128 operands, 128 x sum(w) taken out), else two planes: blocks
    # of both kinds, folded values up to +-120 (the most any pair of these scales makes below
    # 128: 127 is prime) and blocks just past the limit (+-128 to 144), one row of a group
    # enough to keep it two planes; against folded and split activation blocks, 1 to 10
    # chunks per block
    rng = np.random.default_rng(17)
    n, nb = 40, 12
    k = nb * 32
    # (positive scale, negative scale) x 6 = the extremes: 1.25/0.125 fold with factors 10
    # and 1 (120), 1.5/0.125 fails (12 x 12), 1/0.0625 fails (12 x 16), 1/0.125 folds (96)
    pairs = np.array([[1.25, 0.125], [1.5, 0.125], [1.0, 0.0625], [1.0, 0.125], [1.0, 1.0]])
    kind = rng.integers(0, len(pairs), (n // 8, nb)).repeat(8, 0)
    kind[8, 3] = 1  # one row past the limit in a group of 120s
    kind[8:16, 3][1:] = 0
    w = rng.uniform(-1, 1, (n, nb, 32)).astype(np.float32) * np.float32(0.1)
    extremes = pairs[kind] * 6
    w[..., 0], w[..., 1] = extremes[..., 0], -extremes[..., 1]
    flip = rng.random((n, nb)) < 0.5  # -120 as well as +120
    w[flip] *= -1
    q = formats.quantize(w.reshape(n, k), fmt)
    fold, largest = _weight_block_folds(q, fmt)
    assert fold.any() and not fold.all()
    if fmt != "amxfp4-e8m0":  # powers of two fold to at most 12 x 8
        assert largest.max() == 120 and not fold[1, 3]
    x = _two_sided_blocks(rng, 40, k)
    with selected_isa(kernels, isa):
        _assert_packed_matches(kernels, x, q, fmt, k, (2, 5, 9, 17, 40))


def _fold_window(fmt: str, shift: int) -> tuple[int, int]:
    """AVX2's fold window for a shift (weight_fold.cpp): the codes whose scales are 2^shift
    times the integers 1 to 255, the run of them that ends at the largest."""
    decode = formats.get(fmt).scale_format.decode
    values = decode(np.arange(256, dtype=np.uint8)).astype(np.float64) * 2.0**-shift
    ok = (values >= 1) & (values <= 255) & (values == np.floor(values))
    ok[0x80:] = False  # positive codes only
    hi = int(np.flatnonzero(ok).max())
    lo = hi
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    return lo, hi


@pytest.mark.parametrize("isa", PACKED_TIERS)
@pytest.mark.parametrize("fmt", ["amxfp4", "amxfp4-e4m3", "amxfp4-e8m0"])  # two scales
def test_packed_row_tiles_factored_weight_blocks_at_the_limit(kernels, isa, fmt):
    # AVX2's row tiles combine a weight block's two sums in int32 where all 16 scale codes of
    # its group lie in the window of the shift most blocks share (factors up to 255: E5M2's
    # 224, E4M3's 240, E8M0's 128): groups whose codes are the window's two ends (the
    # largest factor against the largest sums), and groups with one code just past either end
    # (the two planes' path: below the bottom a factor is no integer)
    rng = np.random.default_rng(18)
    n, nb = 48, 8
    k = nb * 32
    shift = -6 if fmt != "amxfp4-e8m0" else -3
    lo, hi = _fold_window(fmt, shift)
    q = formats.quantize(rng.standard_normal((n, k)).astype(np.float32), fmt)
    codes = np.full((n, nb, 2), lo, np.uint8)
    codes[..., 1] = hi  # every group block holds both ends: only this shift covers it
    codes[::3, :, 0] = rng.integers(lo, hi + 1, (n // 3, nb))
    codes[8, 2, 1] = hi + 1  # group 1: just past the top in one row
    codes[17, 5, 0] = lo - 1  # group 2: just below the bottom
    codes[24:32, :, 1] = hi + 1  # group 3: every block past the top
    q = q._replace(scales=codes)
    # the largest weight magnitude wherever the block has it, both signs
    w_codes = rng.integers(0, 256, q.codes.shape).astype(np.uint8) | 0x77
    q = q._replace(codes=w_codes)
    x = np.concatenate([_two_sided_blocks(rng, 20, k),
                        np.tile(np.full(32, 6.0, np.float32), (4, nb))])  # fmt: skip
    with selected_isa(kernels, isa):
        _assert_packed_matches(kernels, x, q, fmt, k, (2, 7, 24))
