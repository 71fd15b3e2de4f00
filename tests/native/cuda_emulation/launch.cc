// The launch functions of plugins/cuda/quantize.cu and gemv.cu for the host emulation
// (cuda_host.h): the same grids and kernels, each CUDA thread a std::thread, blocks one after
// another; mma.sync and the other PTX wrappers emulated in cuda_host.h.
#include <thread>

#include "gemm_kernel.cuh"
#include "gemv_kernel.cuh"
#include "quantize_kernels.cuh"

namespace amx::cuda {
namespace {

template <typename Body>
cudaError_t launch(dim3 grid, dim3 block, Body body) {
  gridDim = grid;
  blockDim = block;
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      emu::Block shared(int(block.x));
      std::vector<std::thread> threads;
      for (unsigned t = 0; t < block.x; ++t)
        threads.emplace_back([&, t] {
          threadIdx = dim3(t);
          blockIdx = dim3(bx, by);
          emu::block = &shared;
          body();
        });
      for (std::thread& thread : threads) thread.join();
    }
  return cudaSuccess;
}

}  // namespace

cudaError_t launch_finite_amax(DType t, const void* x, int64_t rows, int64_t k, const Format& f,
                               unsigned* amax_bits, cudaStream_t) {
  return with_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    return launch(quantize_grid(rows * blocks_of(k, f)), kQuantizeThreads, [&] {
      finite_amax_kernel<T>(static_cast<const T*>(x), rows, k, f, amax_bits);
    });
  });
}

cudaError_t launch_quantize(DType t, const void* x, int64_t rows, int64_t k, const Format& f,
                            const unsigned* amax_bits, uint8_t* codes, uint8_t* scales,
                            float* g_out, cudaStream_t) {
  return with_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    return launch(quantize_grid(rows * blocks_of(k, f)), kQuantizeThreads, [&] {
      quantize_kernel<T>(static_cast<const T*>(x), rows, k, f, amax_bits, codes, scales, g_out);
    });
  });
}

cudaError_t launch_activation_operand(DType t, const void* x, int64_t rows, int64_t k,
                                      const Format* f, const unsigned* amax_bits,
                                      OperandKind kind, int planes, int64_t ld, void* y,
                                      cudaStream_t) {
  const Format format = f != nullptr ? *f : kMxfp4;  // unused without quantization
  const OperandLaunch how = operand_launch(rows, k, f, kind, ld);
  return with_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    const auto* xt = static_cast<const T*>(x);
    if (how.by_warps)
      return launch(quantize_grid(how.threads), kQuantizeThreads, [&] {
        operand_kernel_warp<T>(xt, rows, k, format, f != nullptr, amax_bits, kind, planes, ld, y);
      });
    return launch(quantize_grid(how.threads), kQuantizeThreads, [&] {
      operand_kernel<T>(xt, rows, k, format, f != nullptr, amax_bits, kind, planes, ld, y);
    });
  });
}

// Every variant's kernels, as gemv.cu and gemv_fused.cu launch them.
cudaError_t launch_gemv_fused(int planes, int64_t m, int64_t ld, const WeightArgs& w,
                              const EpilogueArgs& e, bool stream_weights,
                              const FusedActivations& fx, cudaStream_t) {
  return with_dtype(e.y_type, [&](auto type) {
    using T = decltype(type);
    return launch(gemv_grid(m, w.n), kGemvWarps * 32, [&] {
      if (w.format.block == 16 && stream_weights)
        gemv_kernel<T, 16, 1, 3>(nullptr, planes, m, ld, w, e, fx);
      else if (w.format.block == 16)
        gemv_kernel<T, 16, 1, 1>(nullptr, planes, m, ld, w, e, fx);
      else if (stream_weights)
        gemv_kernel<T, 32, 1, 3>(nullptr, planes, m, ld, w, e, fx);
      else
        gemv_kernel<T, 32, 1, 1>(nullptr, planes, m, ld, w, e, fx);
    });
  });
}

cudaError_t launch_gemv(const __nv_bfloat16* a, int planes, int64_t m, int64_t ld,
                        const WeightArgs& w, const EpilogueArgs& e, GemvVariant variant,
                        const FusedActivations& fx, cudaStream_t stream) {
  const GemvVariant v = gemv_variant_for(variant, m);
  if (fuses(v)) return launch_gemv_fused(planes, m, ld, w, e, streams(v), fx, stream);
  auto run = [&](auto source) {
    constexpr int kV = decltype(source)::value;
    return with_dtype(e.y_type, [&](auto type) {
      using T = decltype(type);
      return with_variant_tiles<kV>(m, [&](auto tiles) {
        constexpr int kTiles = decltype(tiles)::value;
        return launch(gemv_grid(m, w.n), kGemvWarps * 32, [&] {
          if (w.format.block == 16)
            gemv_kernel<T, 16, kTiles, kV>(a, planes, m, ld, w, e, fx);
          else
            gemv_kernel<T, 32, kTiles, kV>(a, planes, m, ld, w, e, fx);
        });
      });
    });
  };
  if (streams(v)) return run(std::integral_constant<int, 2>{});
  return run(std::integral_constant<int, 0>{});
}

cudaError_t launch_gemm(const __nv_bfloat16* a, int planes, int64_t m, int64_t ld,
                        const WeightArgs& w, const EpilogueArgs& e, cudaStream_t) {
  const dim3 grid(unsigned((w.n + kTileN - 1) / kTileN), unsigned((m + kTileM - 1) / kTileM));
  return with_dtype(e.y_type, [&](auto tag) {
    using T = decltype(tag);
    return launch(grid, kGemmThreads, [&] {
      if (w.format.block == 16)
        gemm_kernel<T, 16>(a, planes, m, ld, w, e);
      else
        gemm_kernel<T, 32>(a, planes, m, ld, w, e);
    });
  });
}

}  // namespace amx::cuda

// The GEMM's bfloat16 activation planes [planes, rows, K rounded up to 32] (NVFP4's g left
// out), as api.cu makes them.
extern "C" __attribute__((visibility("default"))) int emu_gemm_operand(
    const char* act_format, int dtype, const void* x, int64_t rows, int64_t k, void* planes_out,
    int planes, void* workspace) {
  using namespace amx::cuda;
  amx::Format f;
  const bool quantize = act_format != nullptr && amx::format_by_name(act_format, &f);
  auto* amax = static_cast<unsigned*>(workspace);
  *amax = 0;
  if (quantize && f.tensor_scale) launch_finite_amax(DType(dtype), x, rows, k, f, amax, nullptr);
  return int(launch_activation_operand(DType(dtype), x, rows, k, quantize ? &f : nullptr, amax,
                                       OperandKind::BFloat16, planes, padded_k(k), planes_out,
                                       nullptr));
}
