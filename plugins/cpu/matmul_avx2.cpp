// The W4A4 integer dot products with AVX2 (this file alone is compiled with -mavx2 -mfma; the
// dispatcher calls it only where the CPU has both). The formulation is matmul.cpp's; here a
// 32-element block is one 256-bit register: weight nibbles are split into [low | high] lanes
// (the activation planes' order) and mapped to doubled magnitudes with one byte shuffle per
// sign, then VPMADDUBSW/VPMADDWD give eight exact int32 partial sums per sign pair.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "float_gemv_kernel.h"
#include "internal.h"

namespace amx::cpu {

bool cpu_has_avx2() {
#if defined(__GNUC__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

namespace {

inline float horizontal_sum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

inline __m256 pair_sum(__m256i x, __m256i w, __m256i ones) {
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(x, w), ones));
}

}  // namespace

void int_matmul_avx2(const IntMatmulArgs& a, int64_t n_begin, int64_t n_end) {
  constexpr int kRows = 4;  // activation rows sharing one expansion of a weight block
  const ActivationPlanes& x = *a.x;
  const int64_t nb = x.blocks;
  const int spb = a.w_scales_per_block;
  const __m128i low_nibbles = _mm_set1_epi8(0x0F);
  // 2*|E2M1| for codes of the plane's sign, 0 for the other sign (both 128-bit lanes alike)
  const __m256i pos_table =
      _mm256_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 6, 8, 12,
                       0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i neg_table =
      _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 6, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0,
                       0, 1, 2, 3, 4, 6, 8, 12);
  const __m256i ones = _mm256_set1_epi16(1);

  for (int64_t r0 = 0; r0 < x.rows; r0 += kRows) {
    const int rows = int(std::min<int64_t>(kRows, x.rows - r0));
    for (int64_t j = n_begin; j < n_end; ++j) {
      const uint8_t* wc = a.w_codes + j * nb * 16;
      const uint8_t* ws = a.w_scales + j * nb * spb;
      __m256 acc[kRows] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                           _mm256_setzero_ps()};
      for (int64_t b = 0; b < nb; ++b) {
        const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wc + b * 16));
        const __m256i codes =
            _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(packed, 4), low_nibbles),
                             _mm_and_si128(packed, low_nibbles));
        const __m256i wp = _mm256_shuffle_epi8(pos_table, codes);
        const __m256i wn = _mm256_shuffle_epi8(neg_table, codes);
        const float swp = a.w_table->value[ws[b * spb]] * a.w_g * 0.25f;
        const float swn = a.w_table->value[ws[b * spb + spb - 1]] * a.w_g * 0.25f;
        for (int r = 0; r < rows; ++r) {
          const int64_t at = (r0 + r) * nb + b;
          const __m256i xp =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.pos.data() + at * 32));
          const __m256i xn =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.neg.data() + at * 32));
          const float sxp = x.scale_pos[size_t(at)], sxn = x.scale_neg[size_t(at)];
          __m256 v = acc[r];
          v = _mm256_fmadd_ps(pair_sum(xp, wp, ones), _mm256_set1_ps(sxp * swp), v);
          v = _mm256_fnmadd_ps(pair_sum(xp, wn, ones), _mm256_set1_ps(sxp * swn), v);
          v = _mm256_fnmadd_ps(pair_sum(xn, wp, ones), _mm256_set1_ps(sxn * swp), v);
          v = _mm256_fmadd_ps(pair_sum(xn, wn, ones), _mm256_set1_ps(sxn * swn), v);
          acc[r] = v;
        }
      }
      for (int r = 0; r < rows; ++r)
        a.y[(r0 + r) * a.n + j] = horizontal_sum(acc[r]) + (a.bias ? a.bias[j] : 0.0f);
    }
  }
}

namespace {

// The 8 x 8 transpose of rows r[0..7] in place.
inline void transpose8(__m256 (&r)[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// float_gemv_kernel.h on 8 lanes; its block values serve dequantize_panel_avx2 too
struct Avx2Floats {
  using F = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kAccumulators = 10;  // of 16 registers: the tables, codes, values
  static constexpr int kWeightRows = 1;     // two rows: spills (M = 16 5.9 -> 8.0 ms)
  struct Values {
    __m256 pos, neg;
  };
  static Values values(float scale_pos, float scale_neg, float g) {
    const __m256 magnitude = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
    const __m256 negated = _mm256_sub_ps(_mm256_setzero_ps(), magnitude);
    Values v{_mm256_mul_ps(magnitude, _mm256_set1_ps(scale_pos)),
             _mm256_mul_ps(negated, _mm256_set1_ps(scale_neg))};
    v.pos = _mm256_mul_ps(v.pos, _mm256_set1_ps(g));
    v.neg = _mm256_mul_ps(v.neg, _mm256_set1_ps(g));
    return v;
  }
  // eight code bytes, one per lane: the low nibbles' values (even elements), the high ones'
  // (odd). VPERMPS reads an index's bits 0-2 (the magnitude); the nibble's sign bit moved
  // to bit 31 picks the negative table.
  static void decode(const Values& v, const uint8_t* codes, F* even, F* odd) {
    const __m256i c =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes)));
    const __m256i hi = _mm256_srli_epi32(c, 4);
    *even = _mm256_blendv_ps(_mm256_permutevar8x32_ps(v.pos, c),
                             _mm256_permutevar8x32_ps(v.neg, c),
                             _mm256_castsi256_ps(_mm256_slli_epi32(c, 28)));
    *odd = _mm256_blendv_ps(_mm256_permutevar8x32_ps(v.pos, hi),
                            _mm256_permutevar8x32_ps(v.neg, hi),
                            _mm256_castsi256_ps(_mm256_slli_epi32(c, 24)));
  }
  static F zero() { return _mm256_setzero_ps(); }
  static F load(const float* x) { return _mm256_loadu_ps(x); }
  static F fma(F w, F x, F acc) { return _mm256_fmadd_ps(w, x, acc); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static float sum(F v) { return horizontal_sum(v); }
};

}  // namespace

void dequantize_panel_avx2(const uint8_t* w_codes, const uint8_t* w_scales, const Format& wf,
                           const ScaleTable& table, float w_g, int64_t k, int64_t n, int64_t n0,
                           float* panel) {
  static_assert(kPanel == 16, "two 8 x 8 transposes per 8 k");
  const int64_t nb = blocks_of(k, wf), row_bytes = code_bytes(k, wf);
  const __m256i nibble_shift = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  const float g = wf.tensor_scale ? w_g : 1.0f;
  for (int64_t b = 0; b < nb; ++b) {
    // each column's decoded values of the block's codes: decode_block's products, per code
    __m256 pos[kPanel], neg[kPanel];
    for (int64_t c = 0; c < kPanel; ++c) {
      const int64_t j = n0 + c < n ? n0 + c : n - 1;  // past n: any row, not stored
      const uint8_t* s = w_scales + (j * nb + b) * wf.scales_per_block;
      const Avx2Floats::Values v =
          Avx2Floats::values(table.value[s[0]], table.value[s[wf.scales_per_block - 1]], g);
      pos[c] = v.pos;
      neg[c] = v.neg;
    }
    for (int64_t k0 = b * wf.block; k0 < (b + 1) * wf.block && k0 < k; k0 += 8) {
      __m256 half[2][8];
      for (int64_t c = 0; c < kPanel; ++c) {
        const int64_t j = n0 + c < n ? n0 + c : n - 1;
        int32_t word;
        std::memcpy(&word, w_codes + j * row_bytes + k0 / 2, sizeof word);
        const __m256i codes = _mm256_srlv_epi32(_mm256_set1_epi32(word), nibble_shift);
        // the sign bit (bit 3) to bit 31 picks the negative table; VPERMPS reads bits 0-2
        const __m256 negative = _mm256_castsi256_ps(_mm256_slli_epi32(codes, 28));
        const __m256 v = _mm256_blendv_ps(_mm256_permutevar8x32_ps(pos[c], codes),
                                          _mm256_permutevar8x32_ps(neg[c], codes), negative);
        half[c / 8][c % 8] = n0 + c < n ? v : _mm256_setzero_ps();
      }
      transpose8(half[0]);
      transpose8(half[1]);
      const int64_t rows = k - k0 < 8 ? k - k0 : 8;
      for (int64_t i = 0; i < rows; ++i) {
        _mm256_storeu_ps(panel + (k0 + i) * kPanel, half[0][i]);
        _mm256_storeu_ps(panel + (k0 + i) * kPanel + 8, half[1][i]);
      }
    }
  }
}

void float_gemv_avx2(const FloatGemvArgs& a, int64_t n_begin, int64_t n_end) {
  if (a.wf->block == 32)
    float_gemv_block<Avx2Floats, 32>(a, n_begin, n_end);
  else
    float_gemv_block<Avx2Floats, 16>(a, n_begin, n_end);  // every format has 16 or 32
}

namespace {

// y[r0 .. r0+Rows) x the panel's 16 columns: Rows x 2 accumulators, one broadcast per row and
// two panel loads per k. Rows is a template argument so that the accumulators stay in
// registers for every row count.
template <int Rows>
void panel_rows(const PanelArgs& a, int64_t r0) {
  __m256 c0[Rows], c1[Rows];
  for (int r = 0; r < Rows; ++r) c0[r] = c1[r] = _mm256_setzero_ps();
  const float* x = a.x + r0 * a.k;
  for (int64_t i = 0; i < a.k; ++i) {
    const __m256 b0 = _mm256_loadu_ps(a.panel + i * kPanel);
    const __m256 b1 = _mm256_loadu_ps(a.panel + i * kPanel + 8);
    for (int r = 0; r < Rows; ++r) {
      const __m256 v = _mm256_broadcast_ss(x + r * a.k + i);
      c0[r] = _mm256_fmadd_ps(v, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(v, b1, c1[r]);
    }
  }
  for (int r = 0; r < Rows; ++r) {
    alignas(32) float out[kPanel];
    _mm256_store_ps(out, c0[r]);
    _mm256_store_ps(out + 8, c1[r]);
    float* y = a.y + (r0 + r) * a.n + a.n0;
    for (int64_t c = 0; c < a.cols; ++c) y[c] = out[c] + (a.bias ? a.bias[a.n0 + c] : 0.0f);
  }
}

}  // namespace

void panel_gemm_avx2(const PanelArgs& a) {
  static_assert(kPanel == 16, "the micro-kernel holds 16 columns in two registers");
  constexpr int kRows = 6;  // 6 x 2 accumulators: 12 of the 16 ymm registers
  int64_t r0 = 0;
  for (; r0 + kRows <= a.m; r0 += kRows) panel_rows<kRows>(a, r0);
  switch (a.m - r0) {
    case 5: panel_rows<5>(a, r0); break;
    case 4: panel_rows<4>(a, r0); break;
    case 3: panel_rows<3>(a, r0); break;
    case 2: panel_rows<2>(a, r0); break;
    case 1: panel_rows<1>(a, r0); break;
    default: break;
  }
}

}  // namespace amx::cpu
