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

// Rows activation rows from r0 against weight rows [j_begin, j_end), J at a time (J of
// V::kWeightRows at most; j_end - j_begin a multiple of J), Block-element blocks. Each
// activation vector is loaded once for the J weight rows: with X past L1 (8 rows of K = 4096
// are 128 KB) the loads come from L2, and J = 2 halves them (4096x4096, one thread, AVX-512:
// M = 8 2.8 -> 1.7 ms, M = 16 5.6 -> 3.4 ms).
// A sum runs in Chains accumulators, as many as the registers hold (V::kAccumulators): one
// FMA chain per sum waits on the FMA latency (4096x4096, one thread, AVX-512: M = 3
// 1.7 -> 1.1 ms, M = 8 4.2 -> 3.6 ms; AVX2 M = 3 3.2 -> 2.5 ms). The products of the u-th
// block of a step go to the chains in turn; a step takes enough blocks to give each one.
template <class V, int Rows, int J, int Block>
void float_gemv_rows_of(const FloatGemvArgs& a, int64_t r0, int64_t j_begin, int64_t j_end) {
  constexpr int kGroup = 2 * V::kLanes, kGroups = Block / kGroup;  // elements of a decode
  constexpr int kSums = Rows * J, kRegs = V::kAccumulators;
  constexpr int kChains = 4 * kSums <= kRegs ? 4 : 2 * kSums <= kRegs ? 2 : 1;
  constexpr int kStep = kChains > 2 * kGroups ? kChains / (2 * kGroups) : 1;
  static_assert(kGroups >= 1 && Block % kGroup == 0, "a block is whole decodes");
  const int64_t nb = blocks_of(a.k, *a.wf), row_bytes = code_bytes(a.k, *a.wf);
  const int64_t stride = float_gemv_stride(a.k, *a.wf);  // a permuted activation row
  const int spb = a.wf->scales_per_block;
  const float* x = a.x + r0 * stride;
  for (int64_t j = j_begin; j < j_end; j += J) {
    const uint8_t* codes = a.w_codes + j * row_bytes;
    const uint8_t* scales = a.w_scales + j * nb * spb;
    typename V::F acc[J][Rows][kChains];
    for (int w = 0; w < J; ++w)
      for (int r = 0; r < Rows; ++r)
        for (int c = 0; c < kChains; ++c) acc[w][r][c] = V::zero();
    auto block = [&](int64_t b, int u) {
      typename V::Values v[J];
      for (int w = 0; w < J; ++w) {
        const uint8_t* s = scales + w * nb * spb + b * spb;
        v[w] = V::values(a.table->value[s[0]], a.table->value[s[spb - 1]], a.w_g);
      }
#pragma GCC unroll 4
      for (int h = 0; h < kGroups; ++h) {
        typename V::F even[J], odd[J];
        for (int w = 0; w < J; ++w)
          V::decode(v[w], codes + w * row_bytes + b * (Block / 2) + h * V::kLanes, &even[w],
                    &odd[w]);
        const float* xh = x + b * Block + h * kGroup;
        const int first = (2 * (u * kGroups + h)) % kChains;
        const int second = (2 * (u * kGroups + h) + 1) % kChains;
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
          const typename V::F x_even = V::load(xh + r * stride);
          const typename V::F x_odd = V::load(xh + r * stride + V::kLanes);
          for (int w = 0; w < J; ++w) {
            acc[w][r][first] = V::fma(even[w], x_even, acc[w][r][first]);
            acc[w][r][second] = V::fma(odd[w], x_odd, acc[w][r][second]);
          }
        }
      }
    };
    int64_t b = 0;
    for (; b + kStep <= nb; b += kStep)
#pragma GCC unroll 4
      for (int u = 0; u < kStep; ++u) block(b + u, u);
    for (; b < nb; ++b) block(b, 0);
    for (int w = 0; w < J; ++w)
      for (int r = 0; r < Rows; ++r) {
        typename V::F sum = acc[w][r][0];
        for (int c = 1; c < kChains; ++c) sum = V::add(sum, acc[w][r][c]);
        a.y[(r0 + r) * a.n + j + w] = V::sum(sum) + (a.bias ? a.bias[j + w] : 0.0f);
      }
  }
}

// Weight rows [n_begin, n_end) in passes of V::kWeightRows (the last pass what is left);
// one row at a time for one activation row, whose X stays in L1 (4096x11008, one thread,
// AVX-512: 1.06 ms with one, 1.18 with two)
template <class V, int Rows, int Block>
void float_gemv_rows(const FloatGemvArgs& a, int64_t r0, int64_t n_begin, int64_t n_end) {
  constexpr int J = Rows > 1 ? V::kWeightRows : 1;
  const int64_t paired = n_begin + (n_end - n_begin) / J * J;
  float_gemv_rows_of<V, Rows, J, Block>(a, r0, n_begin, paired);
  if constexpr (J > 1)
    if (paired < n_end) float_gemv_rows_of<V, Rows, 1, Block>(a, r0, paired, n_end);
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
