// The tensor-core GEMM kernel of gemm.cu (how it works: there), in a header of its own so
// that tests/native/cuda_emulation/ can run the same source on the host.
#pragma once

#include "mma.cuh"

namespace amx::cuda {

constexpr int kTileM = 128, kTileN = 128, kTileK = 32, kStages = 3;
constexpr int kGemmThreads = 256;  // 8 warps: 2 along M x 4 along N, each 64 x 32 outputs
constexpr int kWarpTileM = 64, kWarpTileN = 32;

// A 128 x 32 bfloat16 tile: 64-byte rows of four 16-byte chunks, chunk c of row r stored at
// c ^ ((r / 2) % 4) so that ldmatrix's eight rows at one chunk hit distinct banks.
struct Tile {
  uint4 chunk[kTileM * 4];
  __device__ __forceinline__ uint4* at(int r, int c) {
    return &chunk[r * 4 + (c ^ ((r >> 1) & 3))];
  }
};

struct GemmStage {
  Tile a;                       // activations, one plane
  uint4 codes[kTileN];          // weight codes: 32 values (16 bytes) of each row
  uint32_t scale_words[kTileN][2];  // the aligned words that hold each row's scale bytes
};

struct GemmShared {
  GemmStage stage[kStages];
  Tile b;                 // the decoded weights, [n][k]
  uint32_t scale_lut[256];  // scale code -> its bfloat16 value, twice (a pair)
};

template <int B>
__device__ __forceinline__ void load_stage(GemmStage& st, const __nv_bfloat16* a, int plane,
                                           int64_t m, int64_t ld, const WeightArgs& w,
                                           int64_t m0, int64_t n0, int step, bool weights) {
  const int tid = threadIdx.x;
  const int64_t k0 = step * kTileK;
  // activations: 512 chunks of 16 bytes, two per thread
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int q = tid + i * kGemmThreads, r = q >> 2, c = q & 3;
    const int64_t row = m0 + r;
    const bool valid = row < m;
    const __nv_bfloat16* src = a + (int64_t(plane) * m + (valid ? row : 0)) * ld + k0 + 8 * c;
    cp_async<16>(st.a.at(r, c), src, valid);
  }
  if (!weights) return;
  if (tid < kTileN) {  // codes of row tid
    const int64_t row = n0 + tid;
    const bool valid = row < w.n;
    const uint8_t* src = w.codes + (valid ? row : 0) * w.blocks * (B / 2) + step * 16;
    if constexpr (B == 32) {
      cp_async<16>(&st.codes[tid], src, valid);
    } else {  // two 8-byte blocks (8-byte aligned); an odd block count lacks the last one
      uint8_t* dst = reinterpret_cast<uint8_t*>(&st.codes[tid]);
      cp_async<8>(dst, src, valid);
      cp_async<8>(dst + 8, src + 8, valid && 2 * step + 1 < w.blocks);
    }
  } else {  // scale words of row tid - 128
    const int r = tid - kTileN;
    const int64_t row = n0 + r;
    const uint8_t* base = w.scales;
#pragma unroll
    for (int h = 0; h < (B == 16 ? 2 : 1); ++h) {
      const int64_t block = B == 16 ? 2 * step + h : step;
      const bool valid = row < w.n && block < w.blocks;
      const int64_t byte = valid ? scale_byte(w, row, block) : 0;
      cp_async<4>(&st.scale_words[r][h], base + (byte & ~int64_t(3)), valid);
    }
  }
}

// Thread tid decodes 16 weights of the stage: row tid / 2, values 16 (tid % 2) .. + 15.
template <int B>
__device__ __forceinline__ void decode_stage(GemmShared& sh, const GemmStage& st,
                                             const WeightArgs& w, int64_t n0, int step) {
  const int r = threadIdx.x >> 1, h = threadIdx.x & 1;
  const int64_t row = n0 + r, block = B == 16 ? 2 * step + h : step;
  uint32_t pos = 0, neg = 0;
  if (row < w.n && block < w.blocks) {
    const int64_t byte = scale_byte(w, row, block);
    const uint32_t word = st.scale_words[r][B == 16 ? h : 0] >> (8 * (byte & 3));
    pos = sh.scale_lut[word & 0xFF];
    neg = (w.format.scales_per_block == 2 ? sh.scale_lut[(word >> 8) & 0xFF] : pos) ^ 0x80008000u;
  }
  const uint4 codes = st.codes[r];
  const uint32_t lo = h == 0 ? codes.x : codes.z, hi = h == 0 ? codes.y : codes.w;
  uint4 v0, v1;
  decode_quad<0>(lo, pos, neg, v0.x, v0.y);
  decode_quad<1>(lo, pos, neg, v0.z, v0.w);
  decode_quad<0>(hi, pos, neg, v1.x, v1.y);
  decode_quad<1>(hi, pos, neg, v1.z, v1.w);
  *sh.b.at(r, 2 * h) = v0;
  *sh.b.at(r, 2 * h + 1) = v1;
}

template <typename T, int B>
__global__ void __launch_bounds__(kGemmThreads, 2)
    gemm_kernel(const __nv_bfloat16* a, int planes, int64_t m, int64_t ld, WeightArgs w,
                EpilogueArgs e) {
  __shared__ __align__(128) GemmShared sh;
  static_assert(kGemmThreads == 256, "a thread per scale code fills the table");
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int warp_m = warp / 4, warp_n = warp % 4;
  const int64_t m0 = int64_t(blockIdx.y) * kTileM, n0 = int64_t(blockIdx.x) * kTileN;
  sh.scale_lut[tid] = bf16_pair(scale_decode(uint8_t(tid), w.format.scale_format));

  float acc[4][4][4];  // [m16 tile][n8 tile][fragment]
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;

  // Iterations run over (K step, plane); the weights of a step come with its plane 0. The
  // loads run kStages - 1 iterations ahead, tracked by counters (no divisions in the loop).
  const int steps = int(ld / kTileK);
  int load_step = 0, load_plane = 0, load_stage_index = 0;
  auto issue = [&]() {
    if (load_step < steps)
      load_stage<B>(sh.stage[load_stage_index], a, load_plane, m, ld, w, m0, n0, load_step,
                    load_plane == 0);
    cp_async_commit();  // an empty group past the end keeps the wait counts uniform
    load_stage_index = load_stage_index == kStages - 1 ? 0 : load_stage_index + 1;
    if (++load_plane == planes) load_plane = 0, ++load_step;
  };
  for (int s = 0; s < kStages - 1; ++s) issue();

  int stage_index = 0;
  for (int step = 0; step < steps; ++step) {
    for (int plane = 0; plane < planes; ++plane) {
      GemmStage& st = sh.stage[stage_index];
      stage_index = stage_index == kStages - 1 ? 0 : stage_index + 1;
      cp_async_wait<kStages - 2>();
      __syncthreads();  // this stage has landed; the last iteration's MMAs are done
      if (plane == 0) {
        decode_stage<B>(sh, st, w, n0, step);
        __syncthreads();
      }
      issue();  // into the stage the last iteration read
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {  // two 16-value K slices
        uint32_t fa[4][4], fb[2][4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int r = warp_m * kWarpTileM + 16 * i + (lane & 7) + 8 * ((lane >> 3) & 1);
          ldmatrix_x4(fa[i], st.a.at(r, 2 * kk + (lane >> 4)));
        }
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int r = warp_n * kWarpTileN + 16 * j + (lane & 7) + 8 * (lane >> 4);
          ldmatrix_x4(fb[j], sh.b.at(r, 2 * kk + ((lane >> 3) & 1)));
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j)
            mma_bf16(acc[i][j], fa[i], fb[j / 2][2 * (j % 2)], fb[j / 2][2 * (j % 2) + 1]);
      }
    }
  }
  cp_async_wait<0>();

  float scale = w.format.tensor_scale ? w.tensor_scale : 1.0f;
  if (e.act_amax_bits != nullptr) scale = scale * tensor_scale(bits_float(*e.act_amax_bits));
  T* y = static_cast<T*>(e.y);
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int f = 0; f < 4; ++f) {
        const int64_t row = m0 + warp_m * kWarpTileM + 16 * i + g + 8 * (f / 2);
        const int64_t col = n0 + warp_n * kWarpTileN + 8 * j + 2 * t + (f % 2);
        if (row < m && col < w.n) {
          float v = acc[i][j][f] * scale;
          if (e.bias != nullptr) v += load_any(e.bias, e.bias_type, col);
          y[row * w.n + col] = from_float<T>(v);
        }
      }
}

}  // namespace amx::cuda
