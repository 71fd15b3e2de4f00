// The packed W4A4 kernel on 256-bit vectors, for two tiers that differ only in their integer
// dot product: gemv_avx2.cpp (VPMADDUBSW + VPADDW, one VPMADDWD per block and plane) and
// gemv_avx_vnni.cpp (VPDPBUSD ymm). Each includes this file with its own compiler flags; all of
// it has internal linkage, so no copy built for one tier is linked into the other.
//
// The formulation is gemv_avx512.cpp's, on 8-lane groups (PackedLayout, lanes = 8): one int32
// lane per weight row, four exact integer sums per split activation block (activation sign x
// weight sign) and two per folded one, each scaled once. E2M1 has 16 codes, so a 16-byte
// table per 128-bit lane is exactly VPSHUFB's shape: one lookup per sign plane, after masking
// the nibble (VPSHUFB zeroes a byte whose index has bit 7 set). AVX-VNNI's row tiles also
// take the weight blocks that fold (Dot::kFoldWeights, PackedLayout::fold) as one signed
// plane, exact integers as before: each block's sum x 2^Emin is the two planes' P x swp -
// N x swn, which fmsub rounded once and is a float32 (|sum| < 2^24, 2^Emin normal).
#pragma once

#include <immintrin.h>
#include <cstdlib>

#include "internal.h"

namespace amx::cpu {
namespace {

constexpr int kLanes = 8;
constexpr int64_t kBlockBytes = 16 * kLanes;  // a group's codes of one block: 4 loads of 32

// The lookup constants, loaded once per call into registers: 2|E2M1| (0..12) of the positive
// codes (0 for the negative ones), of the negative codes, and the nibble mask.
struct Tables {
  __m256i pos, neg, nibble;
  Tables()
      : pos(_mm256_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 6,
                             8, 12, 0, 0, 0, 0, 0, 0, 0, 0)),
        neg(_mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 6, 8, 12, 0, 0, 0, 0, 0, 0,
                             0, 0, 0, 1, 2, 3, 4, 6, 8, 12)),
        nibble(_mm256_set1_epi8(0x0F)) {}
};

// The four weight operands of one 32-byte load: the positive and the negative plane of the
// low and the high nibbles.
struct WeightPlanes {
  __m256i pos_lo, neg_lo, pos_hi, neg_hi;
};

inline WeightPlanes decode_load(const Tables& t, const uint8_t* codes) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes));
  const __m256i lo = _mm256_and_si256(v, t.nibble);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), t.nibble);
  return {_mm256_shuffle_epi8(t.pos, lo), _mm256_shuffle_epi8(t.neg, lo),
          _mm256_shuffle_epi8(t.pos, hi), _mm256_shuffle_epi8(t.neg, hi)};
}

inline __m256i broadcast4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm256_set1_epi32(v);
}

// 8 scale codes as float32, the scales times 1 / (4 unit) (PackedLayout). The format is a
// template argument: a switch per block cost 3 instructions of ~100. E5M2's codes are the
// high bytes of float16s: one VPUNPCKLBW reading 16 bytes (8 past the block's: PackedLayout's
// slack) puts them there.
template <ScaleFormat SF>
inline __m256 load_scales(const uint8_t* p) {
  const __m128i codes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  if constexpr (SF == ScaleFormat::E5M2)
    return _mm256_cvtph_ps(_mm_unpacklo_epi8(
        _mm_setzero_si128(), _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  else if constexpr (SF == ScaleFormat::E4M3)
    return _mm256_cvtph_ps(_mm_slli_epi16(_mm_cvtepu8_epi16(codes), 7));
  else
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu8_epi32(codes), 23));
}

inline __m256 to_float(__m256i v) { return _mm256_cvtepi32_ps(v); }

// Keeps each accumulator a running sum in a register: without it GCC reassociates a block's
// sums into a tree that holds all 16 products at once, spilling them and reloading the tables
// (M = 1, 4096x4096, AVX2: 8.9 -> 8.0 M instructions per call, with the split path out of line
// and the scale format a template argument).
inline void pin2(__m256i& a, __m256i& b) { asm("" : "+x"(a), "+x"(b)); }

// swp * P - swn * N: a block's two weight-sign sums scaled
inline __m256 weight_sums(__m256i p, __m256i n, __m256 swp, __m256 swn) {
  return _mm256_fmsub_ps(to_float(p), swp, _mm256_mul_ps(to_float(n), swn));
}

// sx * (swp * P - swn * N) + acc: the same, times one activation scale
inline __m256 scale_sums(__m256i p, __m256i n, __m256 swp, __m256 swn, float sx, __m256 acc) {
  return _mm256_fmadd_ps(weight_sums(p, n, swp, swn), _mm256_set1_ps(sx), acc);
}

// Dot is the tier: Dot::Acc holds partial sums, Dot::add(acc, u, s) adds the products of
// unsigned bytes u and signed bytes s (add_to: the same in place, first: into a new sum),
// Dot::sum(a, b) gives a + b as int32 lanes (one per weight row), sum1(a) gives a;
// Dot::kChunk is the most operand rows a row tile takes at once (all in registers).
//
// Split block: (+) Spp*P(+,+) - Spn*P(+,-), (-) Snn*P(-,-) - Snp*P(-,+), activations the
// signed operand, each sum taking both nibbles (at most 16 x 12 x 12 per int16 lane). ~7% of
// Gaussian blocks (ActivationPlanes::Folded); four accumulators, inline (out of line, the
// call cost ~30 instructions more a block).
template <class Dot>
inline __m256 split_sum(const Tables& t, const uint8_t* codes, const uint8_t* xp,
                        const uint8_t* xn, __m256 swp, __m256 swn, float sxp, float sxn,
                        __m256 acc) {
  typename Dot::Acc pp, pn, np, nn;
  for (int l = 0; l < 4; ++l) {
    const WeightPlanes w = decode_load(t, codes + 32 * l);
    const __m256i p_lo = broadcast4(xp + 8 * l), n_lo = broadcast4(xn + 8 * l);
    if (l == 0) {
      pp = Dot::first(w.pos_lo, p_lo);
      pn = Dot::first(w.neg_lo, p_lo);
      np = Dot::first(w.pos_lo, n_lo);
      nn = Dot::first(w.neg_lo, n_lo);
    } else {
      Dot::add_to(pp, w.pos_lo, p_lo);
      Dot::add_to(pn, w.neg_lo, p_lo);
      Dot::add_to(np, w.pos_lo, n_lo);
      Dot::add_to(nn, w.neg_lo, n_lo);
    }
    const __m256i p_hi = broadcast4(xp + 8 * l + 4), n_hi = broadcast4(xn + 8 * l + 4);
    Dot::add_to(pp, w.pos_hi, p_hi);
    Dot::add_to(pn, w.neg_hi, p_hi);
    Dot::add_to(np, w.pos_hi, n_hi);
    Dot::add_to(nn, w.neg_hi, n_hi);
  }
  acc = scale_sums(Dot::sum1(pp), Dot::sum1(pn), swp, swn, sxp, acc);
  return scale_sums(Dot::sum1(nn), Dot::sum1(np), swn, swp, sxn, acc);
}

// y row r, the group's 8 columns (those below n), plus bias.
inline void store_row(const PackedLayout& w, __m256 acc, const float* bias, float* y,
                      int64_t grp, int64_t r) {
  const int64_t n0 = grp * kLanes;
  float* dst = y + r * w.n + n0;
  if (w.n - n0 >= kLanes) {  // a whole group: one vector store
    if (bias) acc = _mm256_add_ps(acc, _mm256_loadu_ps(bias + n0));
    _mm256_storeu_ps(dst, acc);
    return;
  }
  alignas(32) float out[kLanes];
  _mm256_store_ps(out, acc);
  for (int64_t c = 0; c < w.n - n0; ++c) dst[c] = out[c] + (bias ? bias[n0 + c] : 0.0f);
}

// Software prefetch of the block `kPrefetchBlocks` ahead (see gemv_avx512.cpp; past the last
// group the address is outside the vector, which a prefetch may do).
constexpr int64_t kPrefetchBlocks = 16;
inline void prefetch(const void* base, int64_t offset) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(base) + uintptr_t(offset);
  _mm_prefetch(reinterpret_cast<const char*>(address), _MM_HINT_T0);
}
inline void prefetch_ahead(const PackedLayout& w, int64_t at) {
  prefetch(w.codes.data(), (at + kPrefetchBlocks) * kBlockBytes);
  prefetch(w.codes.data(), (at + kPrefetchBlocks) * kBlockBytes + 64);
  prefetch(w.scale_pos.data(), (at + kPrefetchBlocks) * kLanes);
  prefetch(w.scale_neg.data(), (at + kPrefetchBlocks) * kLanes);
}

// 16 scale codes (two blocks' 8) as float32 in two registers, as load_scales.
template <ScaleFormat SF>
inline void load_scales2(const uint8_t* p, __m256* first, __m256* second) {
  const __m128i codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (SF == ScaleFormat::E8M0) {
    *first = load_scales<SF>(p);
    *second = load_scales<SF>(p + kLanes);
  } else {
    // each code the high byte of a 16-bit lane: E5M2's float16 pattern, E4M3's after >> 1
    __m128i lo = _mm_unpacklo_epi8(_mm_setzero_si128(), codes);
    __m128i hi = _mm_unpackhi_epi8(_mm_setzero_si128(), codes);
    if constexpr (SF == ScaleFormat::E4M3) {
      lo = _mm_srli_epi16(lo, 1);
      hi = _mm_srli_epi16(hi, 1);
    }
    *first = _mm256_cvtph_ps(lo);
    *second = _mm256_cvtph_ps(hi);
  }
}

// Sums of one folded activation block (v) against one block of a group's codes: one sum per
// weight sign, its low and high nibbles' products added in the same lanes (VPMADDUBSW:
// 8 x 2 x 12 x 127 = 24384 per int16 lane, no overflow).
template <class Dot>
inline void folded_block(const Tables& t, const uint8_t* codes, const uint8_t* v,
                         __m256i* pos, __m256i* neg) {
  typename Dot::Acc p = Dot::zero(), n = Dot::zero();
  for (int l = 0; l < 4; ++l) {
    const WeightPlanes w = decode_load(t, codes + 32 * l);
    const __m256i lo = broadcast4(v + 8 * l), hi = broadcast4(v + 8 * l + 4);
    p = Dot::add(p, w.pos_lo, lo);
    n = Dot::add(n, w.neg_lo, lo);
    p = Dot::add(p, w.pos_hi, hi);
    n = Dot::add(n, w.neg_hi, hi);
    pin2(p, n);
  }
  *pos = Dot::sum1(p);
  *neg = Dot::sum1(n);
}

// Folded activation blocks [0, count) of one row against one group (pointers at the first):
// weights decoded in registers as they are used, no branch, two blocks a step (their scale
// codes in one load each). Prefetches: the code lines of the blocks kPrefetchBlocks ahead,
// and one line of each scale array (8 blocks) per step.
template <class Dot, ScaleFormat SF>
__m256 folded_run(const Tables& t, const uint8_t* codes, const uint8_t* sp, const uint8_t* sn,
                  const uint8_t* v, const float* scale, int64_t count, __m256 acc) {
  __m256i p, n;
  int64_t i = 0;
  for (; i + 2 <= count; i += 2) {  // codes and v step as pointers, the scales by index
    for (int l = 0; l < 4; ++l) prefetch(codes, kPrefetchBlocks * kBlockBytes + 64 * l);
    prefetch(sp + i * kLanes, kPrefetchBlocks * kLanes);
    prefetch(sn + i * kLanes, kPrefetchBlocks * kLanes);
    __m256 swp0, swp1, swn0, swn1;
    load_scales2<SF>(sp + i * kLanes, &swp0, &swp1);
    load_scales2<SF>(sn + i * kLanes, &swn0, &swn1);
    folded_block<Dot>(t, codes, v, &p, &n);
    acc = scale_sums(p, n, swp0, swn0, scale[i], acc);
    folded_block<Dot>(t, codes + kBlockBytes, v + 32, &p, &n);
    acc = scale_sums(p, n, swp1, swn1, scale[i + 1], acc);
    codes += 2 * kBlockBytes;
    v += 64;
  }
  if (i < count) {
    folded_block<Dot>(t, codes, v, &p, &n);
    acc = scale_sums(p, n, load_scales<SF>(sp + i * kLanes), load_scales<SF>(sn + i * kLanes),
                     scale[i], acc);
  }
  return acc;
}

// One activation row against one group: runs of folded blocks, each split block between them.
template <class Dot, ScaleFormat SF>
void group_one_row(const PackedLayout& w, const ActivationPlanes& x, const float* bias,
                   float* y, int64_t grp, int64_t r) {
  const Tables t;
  const int64_t nb = w.blocks;
  const uint8_t* codes = w.codes.data() + grp * nb * kBlockBytes;
  const uint8_t* sp = w.scale_pos.data() + grp * nb * kLanes;
  const uint8_t* sn = w.scale_neg.data() + grp * nb * kLanes;
  __m256 acc = _mm256_setzero_ps();
  int64_t b = 0;
  for (const int64_t s : x.split) {
    const int64_t at = r * nb + b;  // may be one past the row's last block (an empty run)
    acc = folded_run<Dot, SF>(t, codes + b * kBlockBytes, sp + b * kLanes, sn + b * kLanes,
                              reinterpret_cast<const uint8_t*>(x.folded.values.data()) + at * 32,
                              x.folded.scale.data() + at, s - b, acc);
    if (s == nb) break;
    const size_t as = size_t(r * nb + s);
    acc = split_sum<Dot>(t, codes + s * kBlockBytes, &x.pos[as * 32], &x.neg[as * 32],
                         load_scales<SF>(sp + s * kLanes), load_scales<SF>(sn + s * kLanes),
                         x.scale_pos[as], x.scale_neg[as], acc);
    b = s + 1;
  }
  store_row(w, acc, bias, y, grp, r);
}

// Row tiles (M > 1): every block's operand rows (ActivationPlanes::Operands) in chunks of up
// to Dot::kChunk, each weight plane loaded once per chunk and kept in a register.
constexpr int64_t kMaxRows = 64;
using Operand = ActivationPlanes::Operand;

// A decoded plane into the group's L1 buffer, opaque to the compiler: told what it holds, GCC
// keeps the values in registers past the decode and spills them a second time (~50
// instructions per group-block) instead of loading the buffer in each chunk.
inline void store_plane(__m256i* at, __m256i v) { asm("vmovdqa %1, %0" : "=m"(*at) : "x"(v)); }

// One block's decoded weights as the chunks take them: two planes (their scales, and for
// Dot::kFoldWeights the inits), folded (Dot::kFoldWeights: one plane, 2^Emin as swp, its init
// as init_p) or factored (AVX2: two planes whose scales are f x 2^PackedLayout::fold_shift,
// f from 1 to 255, as f in both int16 halves of each lane).
struct BlockWeights {
  const __m256i* planes;
  bool folded;
  __m256 swp, swn;
  __m256i init_p, init_n;
  __m256i factor_p, factor_n;
};
enum class Kind { kPlanes, kFolded, kFactored };

// acc += sum x scale, the row's accumulator addressed as base + index (GCC adds them first)
inline void accumulate(__m256 sum, float scale, uintptr_t acc, int64_t offset) {
  asm volatile("vfmadd213ps (%[a],%[o]), %[s], %[v]\n\tvmovaps %[v], (%[a],%[o])"
               : [v] "+x"(sum)
               : [s] "x"(_mm256_set1_ps(scale)), [a] "r"(acc), [o] "r"(offset)
               : "memory");
}

// R operand rows of one block against the group's decoded planes (kept in L1, order per load:
// pos_lo, neg_lo, pos_hi, neg_hi): one weight-sign sum per row and sign, the weight planes the
// unsigned operand (at most 12 x 127 x 2 per pair, 8 pairs a block: no int16 lane overflows).
// With Dot::kFoldWeights the operands are v + 128 and the weights the signed operand: each sum
// starts at init (minus 128 x the plane's sum per lane), which takes the offset out again.
// acc: the tile's accumulators as an address less r0's offset (Operand::acc_offset).
// Factored (AVX2): a row's sums P and N (|P| + |N| <= 32 x 12 x 127 = 48768, each element in
// one of them) combine as S = fp x P - fn x N in int32, |S| <= 255 x 48768 < 2^24: exact, and so
// is its float. The planes' form computes S x 2^shift exactly too (every term and the result
// below 2^24 units of 2^shift), then rounds sum x scale + acc once; so does S x (scale x
// 2^shift) + acc, the operand's scale_shifted being exact (Operands::shifted): bit for bit the
// same, two instructions fewer per row.
// (always inlined: three kinds of blocks exceed GCC's inlining budget, and out of line every
// chunk reloads the plane pointer and the registers shuffle)
#define AMX_INLINE inline __attribute__((always_inline))

template <class Dot, int R, Kind K>
AMX_INLINE void chunk_rows(const BlockWeights& w, const Operand* o, uintptr_t acc) {
  typename Dot::Acc p[R], n[R];
#pragma GCC unroll 8
  for (int h = 0; h < 8; ++h) {  // load h / 2, low (even h) or high nibbles
    const int offset = 8 * (h / 2) + 4 * (h % 2);
    if constexpr (Dot::kFoldWeights) {
      // loaded here once, not again for every row, nor hoisted above the chunk's dispatch
      __m256i wp, wn;
      asm volatile("vmovdqa %2, %0\n\tvmovdqa %3, %1"
                   : "=x"(wp), "=x"(wn)
                   : "m"(w.planes[2 * h]), "m"(w.planes[2 * h + 1]));
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) {
        const __m256i b = broadcast4(o[i].values + offset);
        if (h == 0) p[i] = w.init_p, n[i] = w.init_n;
        Dot::add_to(p[i], b, wp);
        Dot::add_to(n[i], b, wn);
      }
    } else {
      // in registers of their own (Dot::step), as the scratch
      register __m256i wp asm("ymm12"), wn asm("ymm13");
      asm volatile("vmovdqa %2, %0\n\tvmovdqa %3, %1"
                   : "=x"(wp), "=x"(wn)
                   : "m"(w.planes[2 * h]), "m"(w.planes[2 * h + 1]));
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) {
        if (h == 0)
          Dot::template step<true>(p[i], n[i], wp, wn, o[i].values + offset);
        else
          Dot::template step<false>(p[i], n[i], wp, wn, o[i].values + offset);
      }
    }
  }
  // the factors loaded here, after the products (as values GCC keeps them in registers for
  // the whole chunk loop and spills accumulators)
  __m256i fp, fn;
  if constexpr (K == Kind::kFactored)
    asm volatile("vmovdqa %2, %0\n\tvmovdqa %3, %1"
                 : "=x"(fp), "=x"(fn)
                 : "m"(w.factor_p), "m"(w.factor_n));
  for (int i = 0; i < R; ++i) {
    if constexpr (K == Kind::kFactored) {
      const __m256i s = _mm256_sub_epi32(_mm256_madd_epi16(p[i], fp), _mm256_madd_epi16(n[i], fn));
      accumulate(to_float(s), o[i].scale_shifted, acc, o[i].acc_offset);
    } else {
      accumulate(weight_sums(Dot::sum1(p[i]), Dot::sum1(n[i]), w.swp, w.swn), o[i].scale, acc,
                 o[i].acc_offset);
    }
  }
}

// The same for a folded weight block (Dot::kFoldWeights): one signed plane per nibble half
// (planes[h]), one sum per row, scaled by 2^Emin per lane (PackedLayout::fold).
template <class Dot, int R>
AMX_INLINE void chunk_rows_folded(const BlockWeights& w, const Operand* o, uintptr_t acc) {
  typename Dot::Acc s[R];
#pragma GCC unroll 8
  for (int h = 0; h < 8; ++h) {
    __m256i wf;
    asm volatile("vmovdqa %1, %0" : "=x"(wf) : "m"(w.planes[h]));
    const int offset = 8 * (h / 2) + 4 * (h % 2);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m256i b = broadcast4(o[i].values + offset);
      if (h == 0) s[i] = w.init_p;
      Dot::add_to(s[i], b, wf);
    }
  }
  for (int i = 0; i < R; ++i)
    accumulate(_mm256_mul_ps(to_float(s[i]), w.swp), o[i].scale, acc, o[i].acc_offset);
}

template <class Dot, int R, Kind K>
AMX_INLINE void chunk(const BlockWeights& w, const Operand* o, uintptr_t acc) {
  if constexpr (K == Kind::kFolded)
    chunk_rows_folded<Dot, R>(w, o, acc);
  else
    chunk_rows<Dot, R, K>(w, o, acc);
}

// A block's chunks: `larger` of size + 1 rows, then `count - larger` of size (1 to R): the
// size dispatched once per block, not per chunk
// (Max: the tier's chunk size for the block's kind)
template <class Dot, int R, int Max, Kind K>
AMX_INLINE void block_chunks(int64_t size, int64_t larger, int64_t count, const BlockWeights& w,
                             const Operand* o, uintptr_t acc) {
  if constexpr (R > 1)
    if (size < R) return block_chunks<Dot, R - 1, Max, K>(size, larger, count, w, o, acc);
  int64_t c = 0;
  if constexpr (R < Max)
    for (; c < larger; ++c, o += R + 1) chunk<Dot, R + 1, K>(w, o, acc);
  for (; c < count; ++c, o += R) chunk<Dot, R, K>(w, o, acc);
}

// The fewest chunks of up to Max rows, their sizes one apart (17 operand rows, up to 5 a
// chunk: 5 4 4 4, not 5 5 5 2), for every count a tile's block can have (two per row): a
// table, as the two divisions were ~12 instructions a block
template <int Max>
struct ChunkPlans {
  uint8_t size[2 * kMaxRows + 1], larger[2 * kMaxRows + 1], chunks[2 * kMaxRows + 1];
  constexpr ChunkPlans() : size(), larger(), chunks() {
    for (int count = 1; count <= 2 * kMaxRows; ++count) {
      const int c = (count + Max - 1) / Max;
      size[count] = uint8_t(count / c);
      larger[count] = uint8_t(count % c);
      chunks[count] = uint8_t(c);
    }
  }
};

template <class Dot, int Max, Kind K>
AMX_INLINE void chunks_of(int64_t count, const BlockWeights& w, const Operand* o, uintptr_t acc) {
  static constexpr ChunkPlans<Max> kPlans;
  block_chunks<Dot, Max, Max, K>(kPlans.size[count], kPlans.larger[count], kPlans.chunks[count],
                                 w, o, acc);
}

// A block's 16 planes into the group's L1 buffer, in chunk_rows' order; with Sums also each
// sign's plane bytes added up per byte (for decode_offset)
template <bool Sums = false>
inline void decode_planes(__m256i pos, __m256i neg, __m256i nibble, const uint8_t* codes,
                          __m256i* planes, __m256i* sum_p = nullptr, __m256i* sum_n = nullptr) {
  for (int l = 0; l < 4; ++l) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 32 * l));
    const __m256i lo = _mm256_and_si256(v, nibble);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
    const __m256i pl = _mm256_shuffle_epi8(pos, lo), nl = _mm256_shuffle_epi8(neg, lo);
    const __m256i ph = _mm256_shuffle_epi8(pos, hi), nh = _mm256_shuffle_epi8(neg, hi);
    store_plane(planes + 4 * l, pl);
    store_plane(planes + 4 * l + 1, nl);
    store_plane(planes + 4 * l + 2, ph);
    store_plane(planes + 4 * l + 3, nh);
    if constexpr (Sums) {
      *sum_p = _mm256_add_epi8(*sum_p, _mm256_add_epi8(pl, ph));
      *sum_n = _mm256_add_epi8(*sum_n, _mm256_add_epi8(nl, nh));
    }
  }
}

// Minus 128 x each lane's sum of bytes: the offset of operands v + 128 taken out again
// (bytes: at most 8 x 12 per lane and sign before the sum).
template <class Dot>
inline __m256i minus_offset(__m256i bytes) {
  const __m256i zero = _mm256_setzero_si256();
  return _mm256_sub_epi32(zero, Dot::add(zero, _mm256_set1_epi8(char(0x80)), bytes));
}

// decode_planes, and the two inits for operands v + 128 (Dot::kFoldWeights, a block that
// stays two planes)
template <class Dot>
inline void decode_offset(__m256i pos, __m256i neg, __m256i nibble, const uint8_t* codes,
                          __m256i* planes, BlockWeights* w) {
  __m256i sum_p = _mm256_setzero_si256(), sum_n = sum_p;
  decode_planes<true>(pos, neg, nibble, codes, planes, &sum_p, &sum_n);
  w->init_p = minus_offset<Dot>(sum_p);
  w->init_n = minus_offset<Dot>(sum_n);
}

// A folded block (PackedLayout::fold): 8 planes of pos x fp - neg x fn, VPMULLD's dword
// products being the 4 byte products (none past 127, so none carries), its init and 2^Emin
// as w->swp
template <class Dot>
inline void decode_folded(__m256i pos, __m256i neg, __m256i nibble, const uint8_t* codes,
                          const uint8_t* fold, __m256i* planes, BlockWeights* w) {
  auto lanes = [](const uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  };
  const __m256i fp = lanes(fold), fn = lanes(fold + kFoldLanes);
  w->swp = _mm256_castsi256_ps(_mm256_slli_epi32(lanes(fold + 2 * kFoldLanes), 23));
  const __m256i zero = _mm256_setzero_si256(), offset = _mm256_set1_epi8(char(0x80));
  __m256i total = zero;
  for (int l = 0; l < 4; ++l) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 32 * l));
    const __m256i lo = _mm256_and_si256(v, nibble);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
    const __m256i flo = _mm256_sub_epi8(_mm256_mullo_epi32(_mm256_shuffle_epi8(pos, lo), fp),
                                        _mm256_mullo_epi32(_mm256_shuffle_epi8(neg, lo), fn));
    const __m256i fhi = _mm256_sub_epi8(_mm256_mullo_epi32(_mm256_shuffle_epi8(pos, hi), fp),
                                        _mm256_mullo_epi32(_mm256_shuffle_epi8(neg, hi), fn));
    store_plane(planes + 2 * l, flo);
    store_plane(planes + 2 * l + 1, fhi);
    total = Dot::add(Dot::add(total, offset, flo), offset, fhi);
  }
  w->init_p = _mm256_sub_epi32(zero, total);
}

// Rows [r0, r1) (at most kMaxRows) against one group: each weight block decoded once into L1,
// then its operand rows in chunks.
template <class Dot, ScaleFormat SF>
void group_rows(const PackedLayout& w, const ActivationPlanes::Operands& o, const float* bias,
                float* y, int64_t grp, int64_t r0, int64_t r1) {
  const Tables t;
  const int64_t nb = w.blocks, rows = int64_t(o.first.size() - 1) / nb;
  __m256 acc[kMaxRows];
  for (int64_t r = r0; r < r1; ++r) acc[r - r0] = _mm256_setzero_ps();
  const uintptr_t acc_base = reinterpret_cast<uintptr_t>(acc) - uintptr_t(r0 * 32);
  alignas(32) __m256i planes[16];
  // AVX2's factored blocks (PackedLayout::fold_lo): the window and 65537 x 2^-shift
  const bool factored = !Dot::kFoldWeights && w.fold_span != 0xFF && o.shifted;
  struct alignas(32) Window {
    __m256 unshift;
    __m128i lo, span;
  } window;
  window.unshift = _mm256_set1_ps(65537.0f * exp2i(-w.fold_shift));
  window.lo = _mm_set1_epi8(char(w.fold_lo));
  window.span = _mm_set1_epi8(char(w.fold_span));
  BlockWeights bw;  // set member by member: its aggregate form was a REP STOSQ per block
  bw.planes = planes;
  bw.folded = false;
  bw.init_p = bw.init_n = _mm256_setzero_si256();
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t at_w = grp * nb + b;
    prefetch_ahead(w, at_w);
    // the tables loaded for each block's decode: kept in registers for the whole call, they
    // were spilled and restored around every block's chunks (and as plain values GCC loads
    // them again for every lookup)
    __m256i pos, neg, nibble;
    asm volatile("vmovdqa %3, %0\n\tvmovdqa %4, %1\n\tvmovdqa %5, %2"
                 : "=x"(pos), "=x"(neg), "=x"(nibble)
                 : "m"(t.pos), "m"(t.neg), "m"(t.nibble));
    bw.swp = load_scales<SF>(w.scale_pos.data() + at_w * kLanes);
    bw.swn = load_scales<SF>(w.scale_neg.data() + at_w * kLanes);
    const uint8_t* codes = w.codes.data() + at_w * kBlockBytes;
    if constexpr (Dot::kFoldWeights) {
      prefetch(w.fold.data(), (at_w + kPrefetchBlocks) * kFoldBytes);
      const uint8_t* fold = w.fold.data() + at_w * kFoldBytes;
      bw.folded = fold[2 * kFoldLanes] != 0;  // lane 0's exponent field (PackedLayout::fold)
      if (bw.folded)
        decode_folded<Dot>(pos, neg, nibble, codes, fold, planes, &bw);
      else
        decode_offset<Dot>(pos, neg, nibble, codes, planes, &bw);
    } else {
      decode_planes(pos, neg, nibble, codes, planes);
    }
    const int64_t i0 = o.first[size_t(b * rows + r0)];
    const int64_t count = o.first[size_t(b * rows + r1)] - i0;
    if (count == 0) continue;
    const Operand* list = o.list.data() + i0;
    if constexpr (Dot::kFoldWeights) {
      if (bw.folded) {
        chunks_of<Dot, Dot::kFoldedChunk, Kind::kFolded>(count, bw, list, acc_base);
        continue;
      }
    } else if (factored) {
      // every scale code of the block in the fold window: c - lo <= span, unsigned (the
      // constants loaded here, not held in registers across the chunks)
      __m128i lo, span;
      __m256 unshift;
      asm volatile("vmovdqa %3, %0\n\tvmovdqa %4, %1\n\tvmovaps %5, %2"
                   : "=x"(lo), "=x"(span), "=x"(unshift)
                   : "m"(window.lo), "m"(window.span), "m"(window.unshift));
      const __m128i block_codes = _mm_unpacklo_epi64(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.scale_pos.data() + at_w * kLanes)),
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.scale_neg.data() + at_w * kLanes)));
      const __m128i d = _mm_sub_epi8(block_codes, lo);
      if (_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(d, span), d)) == 0xFFFF) {
        // f x 65537 (< 2^24, exact): f in both int16 halves
        bw.factor_p = _mm256_cvttps_epi32(_mm256_mul_ps(bw.swp, unshift));
        bw.factor_n = _mm256_cvttps_epi32(_mm256_mul_ps(bw.swn, unshift));
        chunks_of<Dot, Dot::kChunk, Kind::kFactored>(count, bw, list, acc_base);
        continue;
      }
    }
    chunks_of<Dot, Dot::kChunk, Kind::kPlanes>(count, bw, list, acc_base);
  }
  for (int64_t r = r0; r < r1; ++r) store_row(w, acc[r - r0], bias, y, grp, r);
}

template <class Dot, ScaleFormat SF>
void packed_gemv_format(const PackedLayout& w, const ActivationPlanes& x, const float* bias,
                        float* y, int64_t group_begin, int64_t group_end, int64_t row_begin,
                        int64_t row_end) {
  if (x.rows == 1) {  // (a last row tile of one row takes the row tiles' path: x.split is row 0's)
    for (int64_t grp = group_begin; grp < group_end; ++grp)
      group_one_row<Dot, SF>(w, x, bias, y, grp, row_begin);
    return;
  }
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kMaxRows) {
    const int64_t r1 = r0 + kMaxRows < row_end ? r0 + kMaxRows : row_end;
    for (int64_t grp = group_begin; grp < group_end; ++grp)
      group_rows<Dot, SF>(w, x.operands, bias, y, grp, r0, r1);
  }
}

template <class Dot>
void packed_gemv(const PackedLayout& w, const ActivationPlanes& x, const float* bias, float* y,
                 int64_t group_begin, int64_t group_end, int64_t row_begin, int64_t row_end) {
  switch (w.scale_format) {
    case ScaleFormat::E5M2:
      return packed_gemv_format<Dot, ScaleFormat::E5M2>(w, x, bias, y, group_begin, group_end,
                                                        row_begin, row_end);
    case ScaleFormat::E4M3:
      return packed_gemv_format<Dot, ScaleFormat::E4M3>(w, x, bias, y, group_begin, group_end,
                                                        row_begin, row_end);
    case ScaleFormat::E8M0:
      break;
  }
  packed_gemv_format<Dot, ScaleFormat::E8M0>(w, x, bias, y, group_begin, group_end, row_begin,
                                             row_end);
}

}  // namespace
}  // namespace amx::cpu
