// The GEMV kernel of gemv.cu, in a header of its own so that tests/native/cuda_emulation/
// can run the same source on the host.
#pragma once

#include "device.cuh"

namespace amx::cuda {

constexpr int kWarps = 8;

// The B / 2 code bytes of one block as 32-bit words (element e: bits 4*(e%8) of word e/8).
template <int B>
__device__ __forceinline__ void load_codes(const uint8_t* p, uint32_t* words) {
  if constexpr (B == 32) {
    const uint4 q = *reinterpret_cast<const uint4*>(p);
    words[0] = q.x, words[1] = q.y, words[2] = q.z, words[3] = q.w;
  } else {
    const uint2 q = *reinterpret_cast<const uint2*>(p);
    words[0] = q.x, words[1] = q.y;
  }
}

template <typename T, int B>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_kernel(const float* xq, int m, int64_t ld, WeightArgs w, EpilogueArgs e) {
  __shared__ E2m1Table table;
  table.fill();
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= w.n) return;
  const Format f = w.format;
  const int spb = f.scales_per_block;
  const uint8_t* codes = w.codes + row * w.blocks * (B / 2);
  const uint8_t* scales = w.scales + row * w.blocks * spb;

  float acc[kGemvMaxRows];
#pragma unroll
  for (int i = 0; i < kGemvMaxRows; ++i) acc[i] = 0.0f;
  for (int64_t b = lane; b < w.blocks; b += 32) {
    uint32_t words[B / 8];
    load_codes<B>(codes + b * (B / 2), words);
    const float scale_pos = scale_decode(scales[b * spb], f.scale_format);
    const float scale_neg = spb == 2 ? scale_decode(scales[b * spb + 1], f.scale_format) : scale_pos;
    float wv[B];  // dequant(W) of the block: amx::dequantize_element's values
#pragma unroll
    for (int j = 0; j < B; ++j) {
      const uint32_t code = (words[j / 8] >> (4 * (j % 8))) & 0xFu;
      float v = table.value[code] * ((code & 8u) ? scale_neg : scale_pos);
      if (f.tensor_scale) v = v * w.tensor_scale;
      wv[j] = v;
    }
#pragma unroll
    for (int i = 0; i < kGemvMaxRows; ++i) {
      if (i >= m) break;
      const float4* x4 = reinterpret_cast<const float4*>(xq + i * ld + b * B);
      float sum = 0.0f;
#pragma unroll
      for (int q = 0; q < B / 4; ++q) {
        const float4 x = x4[q];
        sum += x.x * wv[4 * q] + x.y * wv[4 * q + 1] + x.z * wv[4 * q + 2] + x.w * wv[4 * q + 3];
      }
      acc[i] += sum;
    }
  }
#pragma unroll
  for (int i = 0; i < kGemvMaxRows; ++i) {
    if (i >= m) break;
    float v = acc[i];
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
    if (lane == 0) {
      if (e.bias != nullptr) v += load_any(e.bias, e.bias_type, row);
      static_cast<T*>(e.y)[i * w.n + row] = from_float<T>(v);
    }
  }
}

}  // namespace amx::cuda
