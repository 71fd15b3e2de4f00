// Small-M matmul (decode and small batches, M <= 256) on bfloat16 tensor cores. Each CTA
// reads its weights once and decodes them in registers straight into MMA fragments
// (decode_quad), with no shared-memory staging. The MMA runs "transposed": its 16 rows are
// weight rows and its 8 columns activation rows, so M <= 8 wastes nothing on padding rows of
// the large operand. A CTA owns 16 weight rows and up to 64 activation rows (more rows: more
// CTAs along y, decoding the same weights again, from L2); its 8 warps split K and add
// their partial sums in shared memory. The activation operand is the GEMM's, 1-3 exact
// bfloat16 planes read through L1; NVFP4's tensor scales are applied once at the end.
#include "gemv_kernel.cuh"

namespace amx::cuda {

cudaError_t launch_gemv(const __nv_bfloat16* a, int planes, int64_t m, int64_t ld,
                        const WeightArgs& w, const EpilogueArgs& e, cudaStream_t stream) {
  const dim3 grid = gemv_grid(m, w.n), block(kGemvWarps * 32);
  if (grid.y > 65535) return cudaErrorInvalidConfiguration;
  return with_dtype(e.y_type, [&](auto type) {
    using T = decltype(type);
    return with_gemv_tiles(m, [&](auto tiles) {
      constexpr int kTiles = decltype(tiles)::value;
      if (w.format.block == 16)
        gemv_kernel<T, 16, kTiles><<<grid, block, 0, stream>>>(a, planes, m, ld, w, e);
      else
        gemv_kernel<T, 32, kTiles><<<grid, block, 0, stream>>>(a, planes, m, ld, w, e);
      return cudaGetLastError();
    });
  });
}

}  // namespace amx::cuda
