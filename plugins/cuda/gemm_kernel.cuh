// The tensor-core GEMM kernel of gemm.cu (how it works: there), in a header of its own so
// that tests/native/cuda_emulation/ can run the same source on the host.
#pragma once

#if !defined(AMX_CUDA_HOST_EMULATION)
#include <mma.h>
#endif

#include "device.cuh"

namespace amx::cuda {

namespace wmma = nvcuda::wmma;

constexpr int kTileM = 128, kTileN = 128, kTileK = 32;
constexpr int kStride = kTileK + 8;  // shared-memory row length: a multiple of 8 for WMMA
constexpr int kWarpsN = 4, kGemmThreads = 256;
constexpr int kFragsM = 4, kFragsN = 2;  // per warp: 64 x 32

template <typename T, int B>
__global__ void __launch_bounds__(kGemmThreads)
    gemm_kernel(const __nv_bfloat16* a, int planes, int64_t m, int64_t ld, WeightArgs w,
                EpilogueArgs e) {
  __shared__ __align__(128) __nv_bfloat16 a_tile[kTileM * kStride];
  __shared__ __align__(128) __nv_bfloat16 b_tile[kTileN * kStride];  // [n][k]: column-major B
  __shared__ __align__(128) float patch[kGemmThreads / 32][16 * 16];
  __shared__ E2m1Table table;
  table.fill();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int warp_m = warp / kWarpsN, warp_n = warp % kWarpsN;
  const int64_t m0 = int64_t(blockIdx.y) * kTileM, n0 = int64_t(blockIdx.x) * kTileN;
  const Format f = w.format;
  const int spb = f.scales_per_block;
  const int64_t row_bytes = w.blocks * (B / 2);

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kFragsM][kFragsN];
#pragma unroll
  for (int i = 0; i < kFragsM; ++i)
#pragma unroll
    for (int j = 0; j < kFragsN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  for (int64_t k0 = 0; k0 < ld; k0 += kTileK) {
    __syncthreads();  // the previous step's tiles are consumed (and the table is filled)
    {
      // weights: thread -> (row r, 16 values from column k0 + 16 * half)
      const int r = threadIdx.x >> 1, half = threadIdx.x & 1;
      const int64_t n_row = n0 + r, e0 = k0 + 16 * half, block = e0 / B;
      uint32_t packed[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // 16 bfloat16 values
      if (n_row < w.n && block < w.blocks) {
        const uint2 q = *reinterpret_cast<const uint2*>(w.codes + n_row * row_bytes + e0 / 2);
        const uint8_t* s = w.scales + (n_row * w.blocks + block) * spb;
        const float scale_pos = scale_decode(s[0], f.scale_format);
        const float scale_neg = spb == 2 ? scale_decode(s[1], f.scale_format) : scale_pos;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          const uint32_t code = ((j < 8 ? q.x : q.y) >> (4 * (j % 8))) & 0xFu;
          const __nv_bfloat16 v =
              __float2bfloat16_rn(table.value[code] * ((code & 8u) ? scale_neg : scale_pos));
          packed[j / 2] |= uint32_t(__bfloat16_as_ushort(v)) << (16 * (j % 2));
        }
      }
      uint4* dst = reinterpret_cast<uint4*>(b_tile + r * kStride + 16 * half);
      dst[0] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
      dst[1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
    }
    for (int p = 0; p < planes; ++p) {
      if (p > 0) __syncthreads();  // the previous plane's A tile is consumed
      for (int c = threadIdx.x; c < kTileM * kTileK / 8; c += kGemmThreads) {
        const int r = c / (kTileK / 8), col = (c % (kTileK / 8)) * 8;
        const int64_t row = m0 + r;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (row < m) v = *reinterpret_cast<const uint4*>(a + (p * m + row) * ld + k0 + col);
        *reinterpret_cast<uint4*>(a_tile + r * kStride + col) = v;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kTileK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[kFragsM];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb[kFragsN];
#pragma unroll
        for (int i = 0; i < kFragsM; ++i)
          wmma::load_matrix_sync(fa[i], a_tile + (warp_m * 64 + i * 16) * kStride + kk, kStride);
#pragma unroll
        for (int j = 0; j < kFragsN; ++j)
          wmma::load_matrix_sync(fb[j], b_tile + (warp_n * 32 + j * 16) * kStride + kk, kStride);
#pragma unroll
        for (int i = 0; i < kFragsM; ++i)
#pragma unroll
          for (int j = 0; j < kFragsN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
      }
    }
  }

  float scale = f.tensor_scale ? w.tensor_scale : 1.0f;
  if (e.act_amax_bits != nullptr) scale = scale * tensor_scale(bits_float(*e.act_amax_bits));
  T* y = static_cast<T*>(e.y);
#pragma unroll
  for (int i = 0; i < kFragsM; ++i)
#pragma unroll
    for (int j = 0; j < kFragsN; ++j) {
      wmma::store_matrix_sync(patch[warp], acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      for (int t = lane; t < 256; t += 32) {
        const int64_t row = m0 + warp_m * 64 + i * 16 + t / 16;
        const int64_t col = n0 + warp_n * 32 + j * 16 + t % 16;
        if (row < m && col < w.n) {
          float v = patch[warp][t] * scale;
          if (e.bias != nullptr) v += load_any(e.bias, e.bias_type, col);
          y[row * w.n + col] = from_float<T>(v);
        }
      }
      __syncwarp();
    }
}

}  // namespace amx::cuda
