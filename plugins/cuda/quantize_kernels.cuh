// The activation kernels of quantize.cu, in a header of their own so that
// tests/native/cuda_emulation/ can run the same source on the host.
#pragma once

#include "device.cuh"

namespace amx::cuda {

// Launch shape of every kernel here: grid-stride loops over `items` (blocks of values).
constexpr int kQuantizeThreads = 256;
inline unsigned quantize_grid(int64_t items) {  // items: one per thread
  const int64_t blocks = (items + kQuantizeThreads - 1) / kQuantizeThreads;
  return unsigned(blocks < 1 ? 1 : (blocks > 65535 ? 65535 : blocks));
}

// The activation operand takes a warp per unit of 32 values below this many units (see
// operand_kernel_warp), a thread per unit (a block, or 32 values) from it on.
constexpr int64_t kWarpOperandMaxUnits = 4096;

struct OperandLaunch {
  bool by_warps;    // operand_kernel_warp, else operand_kernel
  int64_t threads;  // for quantize_grid
};
inline OperandLaunch operand_launch(int64_t rows, int64_t k, const Format* f, OperandKind kind,
                                    int64_t ld) {
  const bool padded = kind != OperandKind::SameType;
  const int64_t warp_units = rows * (padded ? ld / 32 : (k + 31) / 32);
  if (warp_units < kWarpOperandMaxUnits) return {true, warp_units * 32};
  const int unit = f != nullptr ? f->block : 32;
  return {false, rows * (padded ? ld / unit : (k + unit - 1) / unit)};
}

// The n = min(width, k - start) values of row r from column `start`, as float32.
template <typename T>
__device__ inline int load_values(const T* x, int64_t k, int64_t r, int64_t start, int width,
                           float* v) {
  const int64_t left = k - start;
  const int n = left <= 0 ? 0 : int(left < width ? left : width);
  const T* p = x + r * k + start;
  for (int i = 0; i < n; ++i) v[i] = to_float(p[i]);
  return n;
}

__device__ inline float activation_g(const Format& f, const unsigned* amax_bits) {
  return f.tensor_scale ? tensor_scale(bits_float(*amax_bits)) : 1.0f;
}

template <typename T>
__global__ void finite_amax_kernel(const T* x, int64_t rows, int64_t k, Format f,
                                   unsigned* amax_bits) {
  const int64_t nb = (k + f.block - 1) / f.block, total = rows * nb;
  float local = 0.0f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    float v[32];
    const int n = load_values(x, k, i / nb, (i % nb) * f.block, f.block, v);
    float block_max = 0.0f;
    bool bad = false;
    for (int j = 0; j < n; ++j) {
      bad |= !is_finite(v[j]);
      const float a = fabsf(v[j]);
      block_max = a > block_max ? a : block_max;
    }
    if (!bad && block_max > local) local = block_max;
  }
  for (int offset = 16; offset > 0; offset >>= 1)
    local = fmaxf(local, __shfl_xor_sync(0xFFFFFFFFu, local, offset));
  // non-negative floats order like their bit patterns
  if ((threadIdx.x & 31) == 0 && local > 0.0f) atomicMax(amax_bits, float_bits(local));
}

template <typename T>
__global__ void quantize_kernel(const T* x, int64_t rows, int64_t k, Format f,
                                const unsigned* amax_bits, uint8_t* codes, uint8_t* scales,
                                float* g_out) {
  const float g = activation_g(f, amax_bits);
  const int64_t nb = (k + f.block - 1) / f.block, total = rows * nb;
  const int64_t row_bytes = nb * f.block / 2;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / nb, b = i % nb;
    float v[32];
    const int n = load_values(x, k, r, b * f.block, f.block, v);
    quantize_block(v, n, f, g, codes + r * row_bytes + b * (f.block / 2),
                   scales + i * f.scales_per_block);
  }
  if (g_out != nullptr && blockIdx.x == 0 && threadIdx.x == 0) *g_out = g;
}

// One unit (a quantization block, or 32 values without quantization) per thread, through
// amx::quantize_block: the most blocks per instruction, for large inputs. See OperandKind
// for what is written where.
template <typename T>
__global__ void operand_kernel(const T* x, int64_t rows, int64_t k, Format f, bool quantize,
                               const unsigned* amax_bits, OperandKind kind, int planes,
                               int64_t ld, void* y) {
  const int unit = quantize ? f.block : 32;
  const bool padded = kind != OperandKind::SameType;
  const int64_t units = padded ? ld / unit : (k + unit - 1) / unit, total = rows * units;
  // NVFP4's g sets the scale codes always; the matmul's planes leave it out of the values
  const float g = quantize ? activation_g(f, amax_bits) : 1.0f;
  const float g_values = kind == OperandKind::BFloat16 ? 1.0f : g;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / units, start = (i % units) * unit;
    float v[32];
    const int n = load_values(x, k, r, start, unit, v);
    if (quantize && n > 0) {
      uint8_t codes[16], scales[2];
      quantize_block(v, n, f, g, codes, scales);
      for (int j = 0; j < n; ++j) v[j] = dequantize_element(codes, scales, j, f, g_values);
    }
    for (int j = n; j < unit; ++j) v[j] = 0.0f;
    if (kind == OperandKind::SameType) {
      T* out = static_cast<T*>(y) + r * k + start;
      for (int j = 0; j < n; ++j) out[j] = from_float<T>(v[j], true);
    } else {
      // v = sum of the planes' values, exactly: each plane holds what the ones before it
      // left over (a non-finite value goes whole into the first plane)
      __nv_bfloat16* out = static_cast<__nv_bfloat16*>(y) + r * ld + start;
      for (int j = 0; j < unit; ++j) {
        float rest = v[j];
        for (int p = 0; p < planes; ++p) {
          const __nv_bfloat16 h = __float2bfloat16_rn(rest);
          out[p * rows * ld + j] = h;
          const float taken = __bfloat162float(h);
          rest = is_finite(taken) ? rest - taken : 0.0f;
        }
      }
    }
  }
}

// The same with one warp per 32 values of a row (one block, or two of a 16-value format), a
// lane per value: the block's max/min/bad by warp shuffles, then every lane runs the same
// amx::block_scales and its own amx::element_code, which is amx::quantize_block spread over
// the lanes. 32 times the threads for the same work, so it is for small inputs, where
// operand_kernel would leave the GPU idle (decode: M = 1 has K / 32 blocks).
template <typename T>
__global__ void operand_kernel_warp(const T* x, int64_t rows, int64_t k, Format f, bool quantize,
                               const unsigned* amax_bits, OperandKind kind, int planes,
                               int64_t ld, void* y) {
  const int lane = threadIdx.x & 31;
  const bool padded = kind != OperandKind::SameType;
  const int64_t units = padded ? ld / 32 : (k + 31) / 32, total = rows * units;
  // NVFP4's g sets the scale codes always; the matmul's planes leave it out of the values
  const float g = quantize ? activation_g(f, amax_bits) : 1.0f;
  const float g_values = kind == OperandKind::BFloat16 ? 1.0f : g;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; i < total; i += warps) {
    const int64_t r = i / units, col = (i % units) * 32 + lane;
    const bool inside = col < k;
    float v = inside ? to_float(x[r * k + col]) : 0.0f;
    if (quantize) {
      // over the lanes of this lane's block: xor offsets below the block size stay inside it
      float hi = v > 0.0f ? v : 0.0f, lo = v < 0.0f ? v : 0.0f;
      float bad = is_finite(v) ? 0.0f : 1.0f;
      for (int offset = 1; offset < f.block; offset <<= 1) {
        hi = fmaxf(hi, __shfl_xor_sync(0xFFFFFFFFu, hi, offset));
        lo = fminf(lo, __shfl_xor_sync(0xFFFFFFFFu, lo, offset));
        bad = fmaxf(bad, __shfl_xor_sync(0xFFFFFFFFu, bad, offset));
      }
      uint8_t scales[2];
      const Divisors d = block_scales(hi, lo, bad > 0.0f, f, g, scales);
      v = inside ? dequantize_code(element_code(v, d), scales, f, g_values) : 0.0f;
    }
    if (kind == OperandKind::SameType) {
      if (inside) static_cast<T*>(y)[r * k + col] = from_float<T>(v, true);
    } else {
      // v = sum of the planes' values, exactly: each plane holds what the ones before it
      // left over (a non-finite value goes whole into the first plane)
      __nv_bfloat16* out = static_cast<__nv_bfloat16*>(y) + r * ld + col;
      float rest = v;
      for (int p = 0; p < planes; ++p) {
        const __nv_bfloat16 h = __float2bfloat16_rn(rest);
        out[p * rows * ld] = h;
        const float taken = __bfloat162float(h);
        rest = is_finite(taken) ? rest - taken : 0.0f;
      }
    }
  }
}

}  // namespace amx::cuda
