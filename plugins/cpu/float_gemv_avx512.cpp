// float_gemv_kernel.h on 16 lanes (this file alone is compiled with -mavx512f; the dispatcher
// calls it only on the avx512-vnni tier, for 32-element blocks). A block's 16 values by code
// fill one register, so one VPERMPS maps a code to its value, where AVX2 needs two lookups
// and a blend: 6 instructions per 32 weights against 12 per 16.
#include <immintrin.h>

#include <cstring>

#include "float_gemv_kernel.h"
#include "internal.h"

namespace amx::cpu {

namespace {

struct Avx512Floats {
  using F = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kAccumulators = 24;  // of 32 registers
  static constexpr int kWeightRows = 2;     // each X vector loaded once for two weight rows
  // the values of codes 0-15 (0-7 positive, 8-15 negative), as dequantize_panel makes them
  struct Values {
    __m512 by_code;
  };
  static Values values(float scale_pos, float scale_neg, float g) {
    const __m512 magnitude = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, 0.0f,
                                            0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
    // (0 - magnitude) for the negative codes: +0 for code 8, as dequantize_panel
    const __m512 signed_magnitude =
        _mm512_mask_sub_ps(magnitude, 0xFF00, _mm512_setzero_ps(), magnitude);
    const __m512 scale =
        _mm512_mask_mov_ps(_mm512_set1_ps(scale_pos), 0xFF00, _mm512_set1_ps(scale_neg));
    Values v{_mm512_mul_ps(signed_magnitude, scale)};
    v.by_code = _mm512_mul_ps(v.by_code, _mm512_set1_ps(g));
    return v;
  }
  // sixteen code bytes, one per lane: the low nibbles' values (even elements), the high
  // ones' (odd); VPERMPS reads an index's bits 0-3, the code
  static void decode(const Values& v, const uint8_t* codes, F* even, F* odd) {
    const __m512i c =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
    *even = _mm512_permutexvar_ps(c, v.by_code);
    *odd = _mm512_permutexvar_ps(_mm512_srli_epi32(c, 4), v.by_code);
  }
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* x) { return _mm512_loadu_ps(x); }
  static F fma(F w, F x, F acc) { return _mm512_fmadd_ps(w, x, acc); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static float sum(F v) { return _mm512_reduce_add_ps(v); }
};

}  // namespace

void float_gemv_avx512(const FloatGemvArgs& a, int64_t n_begin, int64_t n_end) {
  float_gemv_block<Avx512Floats, 32>(a, n_begin, n_end);  // float_gemv_group: 32 only
}

}  // namespace amx::cpu
