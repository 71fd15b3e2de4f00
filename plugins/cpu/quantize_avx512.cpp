// amx::quantize_block for whole 32-element blocks with AVX-512 (this file alone is compiled
// with -mavx512f -mavx512bw): the same IEEE divisions and the same comparisons against the
// E2M1 midpoints, 16 lanes at a time, so the codes are the scalar ones bit for bit (the tests
// in tests/native/ check every ISA). The scale codes: amx::scale_code's steps in SSE lanes.
#include <immintrin.h>

#include "internal.h"
#include "scale_codes_sse.h"

namespace amx::cpu {

namespace {

// E2M1 magnitude codes of |q| (7 midpoints; ties up, past 5 saturates, NaN gives 0), with the
// sign bit where v < 0 and the magnitude is not 0; 0 where the divisor is not positive.
inline __m512i element_codes(__m512 v, __m512 divisor) {
  const __m512 q = _mm512_div_ps(v, divisor);
  const __m512 a = _mm512_castsi512_ps(
      _mm512_and_si512(_mm512_castps_si512(q), _mm512_set1_epi32(0x7FFFFFFF)));
  static const float kMidpoints[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  const __m512i one = _mm512_set1_epi32(1);
  __m512i mag = _mm512_setzero_si512();
  for (float m : kMidpoints)
    mag = _mm512_mask_add_epi32(mag, _mm512_cmp_ps_mask(a, _mm512_set1_ps(m), _CMP_GE_OQ), mag,
                                one);
  const __mmask16 negative = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ) &
                             _mm512_test_epi32_mask(mag, mag);
  const __m512i code = _mm512_mask_or_epi32(mag, negative, mag, _mm512_set1_epi32(8));
  const __mmask16 usable = _mm512_cmp_ps_mask(divisor, _mm512_setzero_ps(), _CMP_GT_OQ);
  return _mm512_maskz_mov_epi32(usable, code);
}

// 16 codes (one per 32-bit lane) as 8 bytes: element 2j in the low nibble of byte j.
inline void pack_codes(__m512i codes, uint8_t* out) {
  const __m512i pairs = _mm512_or_si512(
      _mm512_and_si512(codes, _mm512_set1_epi64(0xF)),
      _mm512_slli_epi64(_mm512_srli_epi64(codes, 32), 4));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm512_cvtepi64_epi8(pairs));
}

inline bool all_finite(__m512 a, __m512 b) {
  const __m512i exp = _mm512_set1_epi32(0x7F800000);
  const __mmask16 bad_a = _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(a), exp), exp);
  const __mmask16 bad_b = _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(b), exp), exp);
  return (bad_a | bad_b) == 0;
}

}  // namespace

namespace {

// The block's scale codes and the divisor of each element (its side's decoded scale).
inline void block_divisors(__m512 a, __m512 b, const Format& f, uint8_t* scales, __m512* da,
                           __m512* db) {
  // max(0, max x) and min(0, min x), as the scalar loop starting from 0
  const float hi = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(a, b), _mm512_setzero_ps()));
  const float lo = _mm512_reduce_min_ps(_mm512_min_ps(_mm512_min_ps(a, b), _mm512_setzero_ps()));
  uint8_t codes[2];
  two_scale_codes(f.scales_per_block == 2 ? hi : (hi > -lo ? hi : -lo), -lo, f, codes);
  scales[0] = codes[0];
  if (f.scales_per_block == 2) scales[1] = codes[1];
  const ScaleTable& table = scale_table(f.scale_format);
  const float divisor_pos = table.value[codes[0]];
  const float divisor_neg = table.value[codes[f.scales_per_block - 1]];
  const __m512 dp = _mm512_set1_ps(divisor_pos), dn = _mm512_set1_ps(divisor_neg);
  const __m512 zero = _mm512_setzero_ps();
  *da = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, zero, _CMP_GT_OQ), dn, dp);
  *db = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(b, zero, _CMP_GT_OQ), dn, dp);
}

// ActivationPlanes' bytes of 16 codes: twice the magnitude in the plane of the code's sign.
inline void store_planes(__m512i codes, uint8_t* pos, uint8_t* neg) {
  const __m512i doubled = _mm512_setr_epi32(0, 1, 2, 3, 4, 6, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i value = _mm512_permutexvar_epi32(
      _mm512_and_si512(codes, _mm512_set1_epi32(7)), doubled);
  const __mmask16 negative = _mm512_test_epi32_mask(codes, _mm512_set1_epi32(8));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(pos),
                   _mm512_cvtepi32_epi8(_mm512_maskz_mov_epi32(__mmask16(~negative), value)));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(neg),
                   _mm512_cvtepi32_epi8(_mm512_maskz_mov_epi32(negative, value)));
}

}  // namespace

void quantize_block32_avx512(const float* x, const Format& f, uint8_t* codes, uint8_t* scales) {
  const __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
  if (!all_finite(a, b)) {  // NaN codes and zero elements: the scalar rule
    quantize_block(x, 32, f, 1.0f, codes, scales);
    return;
  }
  __m512 da, db;
  block_divisors(a, b, f, scales, &da, &db);
  pack_codes(element_codes(a, da), codes);
  pack_codes(element_codes(b, db), codes + 8);
}

bool quantize_block32_planes_avx512(const float* x, const Format& f, uint8_t* pos, uint8_t* neg,
                                    float* scale_pos, float* scale_neg) {
  const __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
  if (!all_finite(a, b)) return false;
  uint8_t scales[2];
  __m512 da, db;
  block_divisors(a, b, f, scales, &da, &db);
  store_planes(element_codes(a, da), pos, neg);
  store_planes(element_codes(b, db), pos + 16, neg + 16);
  const ScaleTable& table = scale_table(f.scale_format);
  *scale_pos = table.value[scales[0]];
  *scale_neg = table.value[scales[f.scales_per_block - 1]];
  return true;
}

}  // namespace amx::cpu
