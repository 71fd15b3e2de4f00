// amx::scale_code (no tensor scale) of two block sides in SSE4.1 lanes, for the vector
// quantizers (quantize_avx2.cpp, quantize_avx512.cpp). Internal linkage on purpose: each
// ISA-specific file compiles its own copy with its own flags, so no copy built for AVX-512 can
// be linked into the AVX2 path.
#pragma once

#include <immintrin.h>

#include "internal.h"

namespace amx::cpu {
namespace {

// amx::scale_code (no tensor scale) of two finite magnitudes >= 0 at once, in SSE lanes: the
// scalar rounding's data-dependent branch (round up or not) was a misprediction in every
// other block, and the blocks' quantization is the fixed cost of a decode step.
inline void two_scale_codes(float first, float second, const Format& f, uint8_t* codes) {
  const __m128 m = _mm_setr_ps(first, second, 0.0f, 0.0f);
  const __m128 s = f.rule == ScaleRule::Minifloat ? _mm_div_ps(m, _mm_set1_ps(6.0f)) : m;
  const __m128i field =
      _mm_and_si128(_mm_srli_epi32(_mm_castps_si128(s), 23), _mm_set1_epi32(0xFF));
  __m128i code;
  if (f.rule == ScaleRule::Minifloat) {  // amx::minifloat_round
    const MiniFloat mf = minifloat_of(f.scale_format);
    const int bias = (1 << (mf.ebits - 1)) - 1;
    // floor(log2 s), raised to the format's subnormal range (a float32 subnormal's -127 too)
    const __m128i e =
        _mm_max_epi32(_mm_sub_epi32(field, _mm_set1_epi32(127)), _mm_set1_epi32(1 - bias));
    // s / 2^(e - mbits) as a product by the power of two, exact; below 2^(mbits+1), so
    // adding 0.5 is exact too and floor(q + 0.5) rounds half up as the scalar code does
    const __m128i inverse_step_field =
        _mm_sub_epi32(_mm_set1_epi32(127 + mf.mbits), e);  // 1..143: a normal float32
    const __m128 q = _mm_mul_ps(s, _mm_castsi128_ps(_mm_slli_epi32(inverse_step_field, 23)));
    const __m128i n = _mm_cvttps_epi32(_mm_floor_ps(_mm_add_ps(q, _mm_set1_ps(0.5f))));
    const __m128i exponent_bits =
        _mm_sll_epi32(_mm_add_epi32(e, _mm_set1_epi32(bias)), _mm_cvtsi32_si128(mf.mbits));
    code = _mm_add_epi32(exponent_bits, _mm_sub_epi32(n, _mm_set1_epi32(1 << mf.mbits)));
    code = _mm_min_epi32(code, _mm_set1_epi32(mf.max_code));  // saturates
  } else {  // amx::pot_code: floor(log2 m) - 2 + 127, clamped to 0..252
    code = _mm_min_epi32(_mm_max_epi32(_mm_sub_epi32(field, _mm_set1_epi32(2)),
                                       _mm_setzero_si128()),
                         _mm_set1_epi32(252));
  }
  const __m128i zero = _mm_castps_si128(_mm_cmpeq_ps(s, _mm_setzero_ps()));
  code = _mm_blendv_epi8(code, _mm_set1_epi32(f.zero_scale_code), zero);
  codes[0] = uint8_t(_mm_cvtsi128_si32(code));
  codes[1] = uint8_t(_mm_extract_epi32(code, 1));
}

}  // namespace
}  // namespace amx::cpu
