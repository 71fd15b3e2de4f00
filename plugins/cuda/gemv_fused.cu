// The GEMV variants that quantize the activations themselves (gemv.cu): built with
// --fmad=false like quantize.cu, so that amx::quantize_block rounds as it does there.
#include "gemv_kernel.cuh"

namespace amx::cuda {

cudaError_t launch_gemv_fused(int planes, int64_t m, int64_t ld, const WeightArgs& w,
                              const EpilogueArgs& e, bool stream_weights,
                              const FusedActivations& fx, cudaStream_t stream) {
  const dim3 grid = gemv_grid(m, w.n), block(kGemvWarps * 32);
  return with_dtype(e.y_type, [&](auto type) {
    using T = decltype(type);
    if (w.format.block == 16 && stream_weights)
      gemv_kernel<T, 16, 1, 3><<<grid, block, 0, stream>>>(nullptr, planes, m, ld, w, e, fx);
    else if (w.format.block == 16)
      gemv_kernel<T, 16, 1, 1><<<grid, block, 0, stream>>>(nullptr, planes, m, ld, w, e, fx);
    else if (stream_weights)
      gemv_kernel<T, 32, 1, 3><<<grid, block, 0, stream>>>(nullptr, planes, m, ld, w, e, fx);
    else
      gemv_kernel<T, 32, 1, 1><<<grid, block, 0, stream>>>(nullptr, planes, m, ld, w, e, fx);
    return cudaGetLastError();
  });
}

}  // namespace amx::cuda
