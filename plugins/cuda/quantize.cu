// Activation quantization on the GPU: one thread per block of values, through the same
// amx::quantize_block / dequantize_element the CPU uses (plugins/include/amx/format.h), so the
// codes and scales are those of amx_export.formats bit for bit.
#include "quantize_kernels.cuh"

namespace amx::cuda {

cudaError_t launch_finite_amax(DType t, const void* x, int64_t rows, int64_t k, const Format& f,
                               unsigned* amax_bits, cudaStream_t stream) {
  return with_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    const int64_t blocks = rows * blocks_of(k, f);
    finite_amax_kernel<T><<<quantize_grid(blocks), kQuantizeThreads, 0, stream>>>(
        static_cast<const T*>(x), rows, k, f, amax_bits);
    return cudaGetLastError();
  });
}

cudaError_t launch_quantize(DType t, const void* x, int64_t rows, int64_t k, const Format& f,
                            const unsigned* amax_bits, uint8_t* codes, uint8_t* scales,
                            float* g_out, cudaStream_t stream) {
  return with_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    const unsigned grid = quantize_grid(rows * blocks_of(k, f));
    quantize_kernel<T><<<grid, kQuantizeThreads, 0, stream>>>(
        static_cast<const T*>(x), rows, k, f, amax_bits, codes, scales, g_out);
    return cudaGetLastError();
  });
}

cudaError_t launch_activation_operand(DType t, const void* x, int64_t rows, int64_t k,
                                      const Format* f, const unsigned* amax_bits,
                                      OperandKind kind, int planes, int64_t ld, void* y,
                                      cudaStream_t stream) {
  const Format format = f != nullptr ? *f : kMxfp4;  // unused without quantization
  const OperandLaunch how = operand_launch(rows, k, f, kind, ld);
  return with_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    const auto* xt = static_cast<const T*>(x);
    if (how.by_warps)
      operand_kernel_warp<T><<<quantize_grid(how.threads), kQuantizeThreads, 0, stream>>>(
          xt, rows, k, format, f != nullptr, amax_bits, kind, planes, ld, y);
    else
      operand_kernel<T><<<quantize_grid(how.threads), kQuantizeThreads, 0, stream>>>(
          xt, rows, k, format, f != nullptr, amax_bits, kind, planes, ld, y);
    return cudaGetLastError();
  });
}

}  // namespace amx::cuda
