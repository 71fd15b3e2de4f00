// amx::quantize_block for whole 32-element blocks with AVX2 (this file alone is compiled with
// -mavx2 -mfma -mf16c): quantize_avx512.cpp's steps in four 8-lane vectors, the same IEEE
// divisions and comparisons against the E2M1 midpoints, so the codes are the scalar ones bit
// for bit (tests/native/ checks every tier). A block holding NaN/Inf is left to the caller's
// scalar code (no scalar amx:: function is compiled here, so none built with these flags can
// be linked into another tier's path).
#include <immintrin.h>

#include "internal.h"
#include "scale_codes_sse.h"

namespace amx::cpu {

namespace {

struct Block {
  __m256 v[4];  // elements 0-7, 8-15, 16-23, 24-31
};

inline Block load_block(const float* x) {
  return {{_mm256_loadu_ps(x), _mm256_loadu_ps(x + 8), _mm256_loadu_ps(x + 16),
           _mm256_loadu_ps(x + 24)}};
}

inline bool all_finite(const Block& b) {
  const __m256i exp = _mm256_set1_epi32(0x7F800000);
  __m256i bad = _mm256_setzero_si256();
  for (const __m256& v : b.v)
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), exp),
                                                  exp));
  return _mm256_testz_si256(bad, bad) != 0;
}

inline float horizontal_max(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

// E2M1 codes of 8 lanes (7 midpoints; ties up, past 5 saturates, NaN gives 0), the sign bit
// where v < 0 and the magnitude is not 0; 0 where the divisor is not positive.
inline __m256i element_codes(__m256 v, __m256 divisor) {
  const __m256 q = _mm256_div_ps(v, divisor);
  const __m256 a = _mm256_and_ps(q, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)));
  static const float kMidpoints[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  __m256i mag = _mm256_setzero_si256();
  for (float m : kMidpoints)  // a true comparison is -1
    mag = _mm256_sub_epi32(mag, _mm256_castps_si256(_mm256_cmp_ps(a, _mm256_set1_ps(m),
                                                                  _CMP_GE_OQ)));
  const __m256i negative =
      _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ)),
                       _mm256_cmpgt_epi32(mag, _mm256_setzero_si256()));
  const __m256i code = _mm256_or_si256(mag, _mm256_and_si256(negative, _mm256_set1_epi32(8)));
  const __m256 usable = _mm256_cmp_ps(divisor, _mm256_setzero_ps(), _CMP_GT_OQ);
  return _mm256_and_si256(code, _mm256_castps_si256(usable));
}

// The block's scale codes and its 32 element codes as bytes in k order.
inline __m256i block_codes(const Block& b, const Format& f, uint8_t* scales) {
  // max(0, max x) and min(0, min x), as the scalar loop starting from 0
  const __m256 zero = _mm256_setzero_ps();
  const __m256 hi_v = _mm256_max_ps(_mm256_max_ps(_mm256_max_ps(b.v[0], b.v[1]),
                                                  _mm256_max_ps(b.v[2], b.v[3])), zero);
  const __m256 lo_v = _mm256_min_ps(_mm256_min_ps(_mm256_min_ps(b.v[0], b.v[1]),
                                                  _mm256_min_ps(b.v[2], b.v[3])), zero);
  const float hi = horizontal_max(hi_v), lo = -horizontal_max(_mm256_sub_ps(zero, lo_v));
  uint8_t codes[2];
  two_scale_codes(f.scales_per_block == 2 ? hi : (hi > -lo ? hi : -lo), -lo, f, codes);
  scales[0] = codes[0];
  if (f.scales_per_block == 2) scales[1] = codes[1];
  const ScaleTable& table = scale_table(f.scale_format);
  const __m256 dp = _mm256_set1_ps(table.value[codes[0]]);
  const __m256 dn = _mm256_set1_ps(table.value[codes[f.scales_per_block - 1]]);
  __m256i c[4];
  for (int i = 0; i < 4; ++i)
    c[i] = element_codes(b.v[i], _mm256_blendv_ps(dn, dp, _mm256_cmp_ps(b.v[i], zero,
                                                                        _CMP_GT_OQ)));
  // packs work per 128-bit lane: the dwords come out as c0[0..3] c1[0..3] c2[0..3] c3[0..3]
  // c0[4..7] ..., which the permutation puts back in k order
  const __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(c[0], c[1]),
                                            _mm256_packs_epi32(c[2], c[3]));
  return _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

}  // namespace

bool quantize_block32_avx2(const float* x, const Format& f, uint8_t* codes, uint8_t* scales) {
  const Block b = load_block(x);
  if (!all_finite(b)) return false;
  const __m256i bytes = block_codes(b, f, scales);
  // byte j = element 2j | element 2j+1 << 4 (at most 255: no saturation)
  const __m256i pairs = _mm256_maddubs_epi16(bytes, _mm256_set1_epi16(0x1001));
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi16(pairs, pairs), 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm256_castsi256_si128(packed));
  return true;
}

bool quantize_block32_planes_avx2(const float* x, const Format& f, uint8_t* pos, uint8_t* neg,
                                  float* scale_pos, float* scale_neg) {
  const Block b = load_block(x);
  if (!all_finite(b)) return false;
  uint8_t scales[2];
  const __m256i bytes = block_codes(b, f, scales);
  // twice the magnitude in the plane of the code's sign (VPSHUFB: codes are 0..15)
  const __m256i pos_table = _mm256_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0,
                                             0, 1, 2, 3, 4, 6, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i neg_table = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 6, 8, 12,
                                             0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 6, 8, 12);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(pos), _mm256_shuffle_epi8(pos_table, bytes));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(neg), _mm256_shuffle_epi8(neg_table, bytes));
  const ScaleTable& table = scale_table(f.scale_format);
  *scale_pos = table.value[scales[0]];
  *scale_neg = table.value[scales[f.scales_per_block - 1]];
  return true;
}

}  // namespace amx::cpu
