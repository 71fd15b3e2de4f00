// Small-M matmul (decode): one warp per weight row. Each lane takes whole weight blocks (a
// 16- or 8-byte load of codes, coalesced across the warp), decodes them once in registers
// and multiplies them into every activation row; the warp then sums its lanes. The weights
// are read exactly once, which is what bounds decode.
#include "gemv_kernel.cuh"

namespace amx::cuda {

cudaError_t launch_gemv(const float* xq, int64_t m, int64_t ld, const WeightArgs& w,
                        const EpilogueArgs& e, cudaStream_t stream) {
  const unsigned grid = unsigned((w.n + kWarps - 1) / kWarps);
  return with_dtype(e.y_type, [&](auto tag) {
    using T = decltype(tag);
    if (w.format.block == 16)
      gemv_kernel<T, 16><<<grid, kWarps * 32, 0, stream>>>(xq, int(m), ld, w, e);
    else
      gemv_kernel<T, 32><<<grid, kWarps * 32, 0, stream>>>(xq, int(m), ld, w, e);
    return cudaGetLastError();
  });
}

}  // namespace amx::cuda
