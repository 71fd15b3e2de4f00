// The activation kernels of quantize.cu, in a header of their own so that
// tests/native/cuda_emulation/ can run the same source on the host.
#pragma once

#include "device.cuh"

namespace amx::cuda {

// Launch shape of every kernel here: grid-stride loops over `items` (blocks of values).
constexpr int kQuantizeThreads = 256;
inline unsigned quantize_grid(int64_t items) {
  const int64_t blocks = (items + kQuantizeThreads - 1) / kQuantizeThreads;
  return unsigned(blocks < 1 ? 1 : (blocks > 65535 ? 65535 : blocks));
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

// One unit (a quantization block, or 32 values without quantization) per thread; see
// OperandKind for what is written where.
template <typename T>
__global__ void operand_kernel(const T* x, int64_t rows, int64_t k, Format f, bool quantize,
                               const unsigned* amax_bits, OperandKind kind, int planes,
                               int64_t ld, void* y) {
  const int unit = quantize ? f.block : 32;
  const bool padded = kind != OperandKind::SameType;
  const int64_t units = padded ? ld / unit : (k + unit - 1) / unit, total = rows * units;
  // NVFP4's g sets the scale codes always; the GEMM's planes leave it out of the values
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
    } else if (kind == OperandKind::Float32) {
      float* out = static_cast<float*>(y) + r * ld + start;
      for (int j = 0; j < unit; ++j) out[j] = v[j];
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

}  // namespace amx::cuda
