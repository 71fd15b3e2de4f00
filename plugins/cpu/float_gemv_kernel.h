// The float path's GEMV (FloatGemvArgs: few activation rows, weight-only or activations
// already fake-quantized) on one vector width. V is the ISA: Avx2Floats (matmul_avx2.cpp,
// 8 lanes) or Avx512Floats (float_gemv_avx512.cpp, 16 lanes), each file compiled with its own
// flags; everything here has internal linkage, so no copy built for one ISA is linked into
// the other.
//
// Each weight row is decoded in registers, as dequantize_panel (decode_block) decodes it: a
// block's values by code, magnitude x scale x g (NVFP4's tensor scale, else 1: exact), looked
// up per element. V::decode turns `lanes` code bytes into the values of their low nibbles
// (the even elements of those 2 x lanes) and of their high nibbles (the odd ones); the
// activations come permuted to match (permute_for_float_gemv), so no nibble moves across
// lanes. Each activation row's sum runs in lanes, added up across them per output.
#pragma once

#include <algorithm>
#include <cstdlib>

#include "internal.h"

namespace amx::cpu {
namespace {

// Rows activation rows from r0 against weight rows [n_begin, n_end), Block-element blocks.
// A row's sum runs in Chains accumulators, as many as the registers hold (V::kAccumulators):
// one FMA chain per row waits on the FMA latency (4096x4096, one thread, AVX-512: M = 3
// 1.7 -> 1.1 ms, M = 8 4.2 -> 3.6 ms; AVX2 M = 3 3.2 -> 2.5 ms). The products of the u-th
// block of a step go to the chains in turn; a step takes enough blocks to give each one.
template <class V, int Rows, int Block>
void float_gemv_rows(const FloatGemvArgs& a, int64_t r0, int64_t n_begin, int64_t n_end) {
  constexpr int kGroup = 2 * V::kLanes, kGroups = Block / kGroup;  // elements of a decode
  constexpr int kRegs = V::kAccumulators;
  constexpr int kChains = 4 * Rows <= kRegs ? 4 : 2 * Rows <= kRegs ? 2 : 1;
  constexpr int kStep = kChains > 2 * kGroups ? kChains / (2 * kGroups) : 1;
  static_assert(kGroups >= 1 && Block % kGroup == 0, "a block is whole decodes");
  const int64_t nb = blocks_of(a.k, *a.wf), row_bytes = code_bytes(a.k, *a.wf);
  const int64_t stride = float_gemv_stride(a.k, *a.wf);  // a permuted activation row
  const int spb = a.wf->scales_per_block;
  const float* x = a.x + r0 * stride;
  for (int64_t j = n_begin; j < n_end; ++j) {
    const uint8_t* codes = a.w_codes + j * row_bytes;
    const uint8_t* scales = a.w_scales + j * nb * spb;
    typename V::F acc[Rows][kChains];
    for (int r = 0; r < Rows; ++r)
      for (int c = 0; c < kChains; ++c) acc[r][c] = V::zero();
    auto block = [&](int64_t b, int u) {
      const typename V::Values v = V::values(a.table->value[scales[b * spb]],
                                             a.table->value[scales[b * spb + spb - 1]], a.w_g);
#pragma GCC unroll 4
      for (int h = 0; h < kGroups; ++h) {
        typename V::F even, odd;
        V::decode(v, codes + b * (Block / 2) + h * V::kLanes, &even, &odd);
        const float* xh = x + b * Block + h * kGroup;
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
          typename V::F& first = acc[r][(2 * (u * kGroups + h)) % kChains];
          typename V::F& second = acc[r][(2 * (u * kGroups + h) + 1) % kChains];
          first = V::fma(even, xh + r * stride, first);
          second = V::fma(odd, xh + r * stride + V::kLanes, second);
        }
      }
    };
    int64_t b = 0;
    for (; b + kStep <= nb; b += kStep)
#pragma GCC unroll 4
      for (int u = 0; u < kStep; ++u) block(b + u, u);
    for (; b < nb; ++b) block(b, 0);
    for (int r = 0; r < Rows; ++r) {
      typename V::F sum = acc[r][0];
      for (int c = 1; c < kChains; ++c) sum = V::add(sum, acc[r][c]);
      a.y[(r0 + r) * a.n + j] = V::sum(sum) + (a.bias ? a.bias[j] : 0.0f);
    }
  }
}

template <class V, int Block>
void float_gemv_chunk(const FloatGemvArgs& a, int64_t r0, int64_t n_begin, int64_t n_end) {
  static_assert(kFloatGemvRows == 8, "a case per row count");
  const int64_t rows = std::min<int64_t>(a.m - r0, kFloatGemvRows);
#define AMX_ROWS(R) float_gemv_rows<V, R, Block>(a, r0, n_begin, n_end)
  switch (rows) {
    case 1: return AMX_ROWS(1);
    case 2: return AMX_ROWS(2);
    case 3: return AMX_ROWS(3);
    case 4: return AMX_ROWS(4);
    case 5: return AMX_ROWS(5);
    case 6: return AMX_ROWS(6);
    case 7: return AMX_ROWS(7);
    default: return AMX_ROWS(8);
  }
#undef AMX_ROWS
}

// Chunks of up to 8 activation rows (their sums in registers) over runs of 16 weight rows,
// whose codes stay in L1 while every chunk passes them.
template <class V, int Block>
void float_gemv_block(const FloatGemvArgs& a, int64_t n_begin, int64_t n_end) {
  for (int64_t j0 = n_begin; j0 < n_end; j0 += 16)
    for (int64_t r0 = 0; r0 < a.m; r0 += kFloatGemvRows)
      float_gemv_chunk<V, Block>(a, r0, j0, std::min(n_end, j0 + 16));
}

}  // namespace
}  // namespace amx::cpu
