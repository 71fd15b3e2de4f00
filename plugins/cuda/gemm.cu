// Large-M matmul on bfloat16 tensor cores (mma.sync m16n8k16, sm_80+). Exactness: a
// fake-quantized activation or a decoded weight is an E2M1 value (2 significant bits) times
// an E5M2, E4M3 or E8M0 scale (<= 4 bits), so it is one bfloat16 exactly, and the product of
// two such values is exact in the float32 accumulator. Unquantized activations arrive as 1-3
// bfloat16 planes that sum to them exactly (launch_activation_operand), one MMA per plane.
// NVFP4's tensor scales are left out of the operands and multiplied in once at the end.
//
// A CTA computes 128 x 128 outputs in K steps of 32, 8 warps of 64 x 32. A three-stage
// cp.async pipeline brings each step's activation tile, raw weight codes and scale bytes
// into shared memory two steps ahead. Each step the CTA decodes its 128 x 32 weights once
// (decode_quad, scales through a 256-entry table) into a bfloat16 tile; the warps then feed
// both operands to the MMAs with ldmatrix from XOR-swizzled tiles (no bank conflicts).
#include "gemm_kernel.cuh"

namespace amx::cuda {

cudaError_t launch_gemm(const __nv_bfloat16* a, int planes, int64_t m, int64_t ld,
                        const WeightArgs& w, const EpilogueArgs& e, cudaStream_t stream) {
  const dim3 grid(unsigned((w.n + kTileN - 1) / kTileN), unsigned((m + kTileM - 1) / kTileM));
  if (grid.y > 65535) return cudaErrorInvalidConfiguration;
  return with_dtype(e.y_type, [&](auto tag) {
    using T = decltype(tag);
    if (w.format.block == 16)
      gemm_kernel<T, 16><<<grid, kGemmThreads, 0, stream>>>(a, planes, m, ld, w, e);
    else
      gemm_kernel<T, 32><<<grid, kGemmThreads, 0, stream>>>(a, planes, m, ld, w, e);
    return cudaGetLastError();
  });
}

}  // namespace amx::cuda
