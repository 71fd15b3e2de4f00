// Small-M matmul (decode and small batches, M <= 256) on bfloat16 tensor cores. Each CTA
// reads its weights once and decodes them in registers straight into MMA fragments
// (decode_quad), with no shared-memory staging. The MMA runs "transposed": its 16 rows are
// weight rows and its 8 columns activation rows, so M <= 8 wastes nothing on padding rows of
// the large operand. A CTA owns 16 weight rows and up to 64 activation rows (more rows: more
// CTAs along y, decoding the same weights again, from L2); its 8 warps split K and add
// their partial sums in shared memory. The activation operand is the GEMM's, 1-3 exact
// bfloat16 planes read through L1; NVFP4's tensor scales are applied once at the end.
//
// Variants (GemvVariant, chosen per process by amx_cuda_set_gemv_variant for A/B timing;
// the same products summed in the same order, so the same bits):
// - baseline: each lane holds two steps of weights (2 x 2 rows x 16 B) in registers; at
//   128 registers two CTAs (16 warps) fit an SM, so ~32 KB of weights are in flight per SM.
// - stream (m <= 16): the CTA copies its weights with cp.async through a ring of 3-4
//   rounds of 8 KB in shared memory, so the bytes in flight cost no registers (~30-40 KB
//   per CTA), and with no weight registers the kernel fits 3 CTAs per SM (85 registers).
// - fused (m <= 8): the lane that multiplies a chunk of X quantizes it itself
//   (amx::quantize_block, as the operand kernel does), so the activation kernel and its
//   launch gap go away; each CTA repeats that work for the K values it reads (K / 32 blocks,
//   spread over 32 lanes, while its weight loads are in flight).
#include "gemv_kernel.cuh"

namespace amx::cuda {

cudaError_t launch_gemv(const __nv_bfloat16* a, int planes, int64_t m, int64_t ld,
                        const WeightArgs& w, const EpilogueArgs& e, GemvVariant variant,
                        const FusedActivations& fx, cudaStream_t stream) {
  const GemvVariant v = gemv_variant_for(variant, m);
  if (fuses(v)) return launch_gemv_fused(planes, m, ld, w, e, streams(v), fx, stream);
  const dim3 grid = gemv_grid(m, w.n), block(kGemvWarps * 32);
  if (grid.y > 65535) return cudaErrorInvalidConfiguration;
  auto run = [&](auto source) {  // the weights' source: 0 registers, 2 the stream ring
    constexpr int kV = decltype(source)::value;
    return with_dtype(e.y_type, [&](auto type) {
      using T = decltype(type);
      return with_variant_tiles<kV>(m, [&](auto tiles) {
        constexpr int kTiles = decltype(tiles)::value;
        if (w.format.block == 16)
          gemv_kernel<T, 16, kTiles, kV><<<grid, block, 0, stream>>>(a, planes, m, ld, w, e, fx);
        else
          gemv_kernel<T, 32, kTiles, kV><<<grid, block, 0, stream>>>(a, planes, m, ld, w, e, fx);
        return cudaGetLastError();
      });
    });
  };
  if (streams(v)) return run(std::integral_constant<int, 2>{});
  return run(std::integral_constant<int, 0>{});
}

}  // namespace amx::cuda
