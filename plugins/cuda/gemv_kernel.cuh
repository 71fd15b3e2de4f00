// The small-M kernel of gemv.cu (how it works: there) and its variants, in a header of its
// own so that tests/native/cuda_emulation/ can run the same source on the host.
#pragma once

#include <type_traits>

#include "mma.cuh"
#include "quantize_kernels.cuh"

namespace amx::cuda {

constexpr int kGemvWarps = 8;    // per CTA, each on its own share of K
constexpr int kGemvRows = 16;    // weight rows per CTA: the MMA's 16 rows
constexpr int kChunk = 32;       // K values one lane decodes at a time (16 code bytes)
constexpr int kGemvRowsM = 64;   // activation rows per CTA at most (8 MMA tiles of 8)

// The 16 code bytes of chunk c of weight row r (0 past the row's blocks), as 4 words.
template <int B>
__device__ __forceinline__ void load_chunk(const WeightArgs& w, int64_t r, int64_t c,
                                           uint32_t (&words)[4]) {
  words[0] = words[1] = words[2] = words[3] = 0;
  if (r >= w.n) return;
  const uint8_t* p = w.codes + r * w.blocks * (B / 2) + c * (kChunk / 2);
  if constexpr (B == 32) {  // rows of 16-byte blocks: aligned
    const uint4 q = *reinterpret_cast<const uint4*>(p);
    words[0] = q.x, words[1] = q.y, words[2] = q.z, words[3] = q.w;
  } else {  // two 8-byte blocks; an odd block count leaves the second one out
    const uint2 q0 = *reinterpret_cast<const uint2*>(p);
    words[0] = q0.x, words[1] = q0.y;
    if (2 * c + 1 < w.blocks) {
      const uint2 q1 = *reinterpret_cast<const uint2*>(p + 8);
      words[2] = q1.x, words[3] = q1.y;
    }
  }
}

// A row's scale codes for one chunk, loaded ahead and decoded when used: bits 0-7 and 8-15
// the first block's (positive, negative) codes, or for 16-value blocks the two blocks' codes;
// bits 16 and 17 say which blocks exist.
template <int B>
__device__ __forceinline__ uint32_t load_scale_codes(const WeightArgs& w, int64_t r,
                                                     int64_t c) {
  if (r >= w.n) return 0;
  const int spb = w.format.scales_per_block;
  if constexpr (B == 32) {
    const uint8_t* s = w.scales + (r * w.blocks + c) * spb;
    return 0x10000u | s[0] | (spb == 2 ? uint32_t(s[1]) << 8 : 0u);
  } else {  // NVFP4, the one 16-value format, has one scale per block
    const uint8_t* s = w.scales + r * w.blocks + 2 * c;
    return 0x10000u | s[0] | (2 * c + 1 < w.blocks ? 0x20000u | uint32_t(s[1]) << 8 : 0u);
  }
}

// The signed bfloat16 scale pairs (see decode_quad) of half h (values 16h .. 16h+15) of a
// chunk, from load_scale_codes and the kernel's table of decoded scale codes; zeros for a
// block that does not exist.
template <int B>
__device__ __forceinline__ void scale_pairs(const uint32_t* lut, bool two_scales,
                                            uint32_t codes, int h, uint32_t& pos,
                                            uint32_t& neg) {
  const bool present = B == 32 ? (codes & 0x10000u) != 0 : (codes >> (16 + h)) & 1u;
  if (!present) {
    pos = neg = 0;
    return;
  }
  pos = lut[(B == 32 ? codes : codes >> (8 * h)) & 0xFF];
  neg = (two_scales ? lut[(codes >> 8) & 0xFF] : pos) ^ 0x80008000u;
}

// The launch shape: 16 weight rows by up to 64 activation rows per CTA.
inline dim3 gemv_grid(int64_t m, int64_t n) {
  return dim3(unsigned((n + kGemvRows - 1) / kGemvRows),
              unsigned((m + kGemvRowsM - 1) / kGemvRowsM));
}

// Calls f(std::integral_constant<int, TILES_M>{}) with the fewest 8-row MMA tiles that
// cover min(m, 64) activation rows.
template <typename F>
cudaError_t with_gemv_tiles(int64_t m, F&& f) {
  if (m <= 8) return f(std::integral_constant<int, 1>{});
  if (m <= 16) return f(std::integral_constant<int, 2>{});
  if (m <= 32) return f(std::integral_constant<int, 4>{});
  return f(std::integral_constant<int, 8>{});
}

// ---- the stream variants' shared memory ------------------------------------------------------
// A round is what the CTA's 8 warps take in one step each: 32 chunks (4 per warp) of each of
// the 16 weight rows, 8 KB of codes. The ring holds kStreamStages<B> rounds in flight.
constexpr int kRoundChunks = kGemvWarps * 4;
template <int B>
constexpr int kStreamStages = B == 32 ? 4 : 3;  // 4 x 10 KB or 3 x 12 KB: under 48 KB static

template <int B>
struct StreamStage {
  // chunk cc of row r at r * 32 + (cc ^ 4 (r & 1)): the 8 lanes of a quarter warp (rows g,
  // g + 1, chunks t) hit 8 distinct 16-byte bank groups
  uint4 codes[kGemvRows * kRoundChunks];
  // the aligned word holding the scale byte(s) of block h of chunk cc, row r, at
  // [h][cc * 16 + (r ^ 8 ((cc >> 1) & 1))]: a warp's 32 lanes hit 32 banks
  uint32_t scale_words[B == 16 ? 2 : 1][kRoundChunks * kGemvRows];
};
__device__ __forceinline__ int stream_code_slot(int r, int cc) {
  return r * kRoundChunks + (cc ^ ((r & 1) << 2));
}
__device__ __forceinline__ int stream_scale_slot(int r, int cc) {
  return cc * kGemvRows + (r ^ (((cc >> 1) & 1) << 3));
}

template <int B, int TILES_M, bool kStream>
struct GemvShared {
  float partial[kGemvWarps][kGemvRows][8 * TILES_M];
};
template <int B, int TILES_M>
struct GemvShared<B, TILES_M, true> {
  union {  // the ring is done with before the partial sums are written
    StreamStage<B> stage[kStreamStages<B>];
    float partial[kGemvWarps][kGemvRows][8 * TILES_M];
  };
};

// y [m, n] = sum over planes of a[p] [m, ld] @ dequant(W without g)^T, times the tensor
// scales, (+ bias). A CTA takes 16 weight rows (blockIdx.x) and up to 8 * TILES_M
// activation rows from row 64 * blockIdx.y. V (a GemvVariant) says where the weights come
// from (registers or the shared ring) and the activations (the operand planes, or X made
// into them here); the products and their order are the same in every variant.
template <typename T, int B, int TILES_M, int V>
__global__ void __launch_bounds__(kGemvWarps * 32, (V & 2) ? 3 : 2)  // CTAs per SM at least
    gemv_kernel(const __nv_bfloat16* a, int planes, int64_t m, int64_t ld, WeightArgs w,
                EpilogueArgs e, FusedActivations fx) {
  constexpr bool kFuse = (V & 1) != 0, kStream = (V & 2) != 0;
  static_assert(!kFuse || TILES_M == 1, "the fused variants make one MMA tile of rows");
  __shared__ __align__(16) GemvShared<B, TILES_M, kStream> sh;
  __shared__ uint32_t scale_lut[256];  // scale code -> its bfloat16 value, twice
  static_assert(kGemvWarps * 32 == 256, "a thread per scale code fills the table");
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  scale_lut[threadIdx.x] = bf16_pair(scale_decode(uint8_t(threadIdx.x), w.format.scale_format));
  const int64_t n0 = int64_t(blockIdx.x) * kGemvRows, m0 = int64_t(blockIdx.y) * kGemvRowsM;
  const int rows = int(m - m0 < 8 * TILES_M ? m - m0 : 8 * TILES_M);
  const int64_t chunks = ld / kChunk;
  const uint32_t* x = reinterpret_cast<const uint32_t*>(a);  // bfloat16 pairs
  const int64_t ld2 = ld / 2;
  const bool two_scales = w.format.scales_per_block == 2;
  // the fused variants' activation g (NVFP4; 1 otherwise): the scale codes take it, the
  // values leave it to the epilogue, as in OperandKind::BFloat16
  const float act_g = kFuse && fx.quantize ? activation_g(fx.format, fx.amax_bits) : 1.0f;
  __syncthreads();

  float acc[TILES_M][4];
#pragma unroll
  for (int i = 0; i < TILES_M; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

  // The 32 activation values of chunk c of tile i's row of this lane in plane p (4 x 16 B).
  auto load_x = [&](int i, int p, int64_t c, uint4 (&v)[4]) {
    const int row = 8 * i + g;
    if (c < chunks && row < rows) {
      const uint4* src = reinterpret_cast<const uint4*>(x + (p * m + m0 + row) * ld2) + 4 * c;
#pragma unroll
      for (int q = 0; q < 4; ++q) v[q] = src[q];
    } else {
#pragma unroll
      for (int q = 0; q < 4; ++q) v[q] = make_uint4(0, 0, 0, 0);
    }
  };
  // Fused: the lane's 32 values of chunk c (row g) as the operand kernel leaves them before
  // the split into planes: fake-quantized without NVFP4's g, zeros past K and past m.
  auto fused_values = [&](int64_t c, float (&v)[32]) {
#pragma unroll
    for (int j = 0; j < 32; ++j) v[j] = 0.0f;
    if (c >= chunks || g >= rows) return;
    const T* xt = static_cast<const T*>(fx.x);
    const int n = load_values(xt, fx.k, m0 + g, c * kChunk, kChunk, v);
    if (!fx.quantize) return;
    for (int b0 = 0; b0 < n; b0 += fx.format.block) {  // blocks of 32, or two of 16
      uint8_t codes[16], scales[2];
      const int count = n - b0 < fx.format.block ? n - b0 : fx.format.block;
      quantize_block(v + b0, count, fx.format, act_g, codes, scales);
      for (int j = 0; j < count; ++j)
        v[b0 + j] = dequantize_element(codes, scales, j, fx.format, 1.0f);
    }
  };
  // Fused: plane p of those values (each plane takes what the ones before it left over,
  // a non-finite value whole into the first), consuming it from `rest`.
  auto next_plane = [&](float (&rest)[32], uint4 (&v)[4]) {
    uint32_t words[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      uint32_t pair = 0;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const __nv_bfloat16 h = __float2bfloat16_rn(rest[2 * j + hh]);
        pair |= uint32_t(__bfloat16_as_ushort(h)) << (16 * hh);
        const float taken = __bfloat162float(h);
        rest[2 * j + hh] = is_finite(taken) ? rest[2 * j + hh] - taken : 0.0f;
      }
      words[j] = pair;
    }
#pragma unroll
    for (int q = 0; q < 4; ++q)
      v[q] = make_uint4(words[4 * q], words[4 * q + 1], words[4 * q + 2], words[4 * q + 3]);
  };

  // Each step the warp takes 4 chunks (128 K values): lane (g, t) chunk 4 step + t of weight
  // rows g and g + 8. The MMA's K order is permuted the same way for both operands (lane t
  // supplies K slots 2t, 2t+1, 2t+8, 2t+9 of every 16; here: 4 consecutive values of its
  // chunk), which changes only the order of the float32 sums.
  struct StepWeights {
    uint32_t codes[2][4], scale_codes[2];  // rows g and g + 8
  };
  auto load_step = [&](int64_t step, StepWeights& sw) {
    const int64_t c = 4 * step + t;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = c < chunks ? n0 + g + 8 * h : w.n;  // past K: zeros
      load_chunk<B>(w, r, c, sw.codes[h]);
      sw.scale_codes[h] = load_scale_codes<B>(w, r, c);
    }
  };
  // The MMAs of one tile and plane, fragment s from half s % 2 of xv[s / 2].
  auto mma_chunk = [&](float (&d)[4], const uint32_t (&frag)[8][4], const uint4 (&xv)[4]) {
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      const uint4& v = xv[s / 2];
      if (s % 2 == 0)
        mma_bf16(d, frag[s], v.x, v.y);
      else
        mma_bf16(d, frag[s], v.z, v.w);
    }
  };
  // A step's first activations are loaded before its weights are decoded, each later
  // activation load before the MMAs of the one before.
  auto run_step = [&](int64_t step, const StepWeights& sw) {
    const int64_t c = 4 * step + t;
    uint4 xv[4];
    float fused[32];  // the fused variants' values of the chunk
    if constexpr (kFuse) {
      fused_values(c, fused);
      next_plane(fused, xv);
    } else {
      load_x(0, 0, c, xv);
    }
    uint32_t frag[8][4];  // the step's A fragments, 16 K slots each
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // row g (h = 0) or g + 8
      uint32_t pos[2], neg[2];
      scale_pairs<B>(scale_lut, two_scales, sw.scale_codes[h], 0, pos[0], neg[0]);
      scale_pairs<B>(scale_lut, two_scales, sw.scale_codes[h], 1, pos[1], neg[1]);
#pragma unroll
      for (int s = 0; s < 8; ++s) {  // values 4s .. 4s+3 of the lane's chunk
        const int half = s >= 4 ? 1 : 0;
        if (s % 2 == 0)
          decode_quad<0>(sw.codes[h][s / 2], pos[half], neg[half], frag[s][h], frag[s][h + 2]);
        else
          decode_quad<1>(sw.codes[h][s / 2], pos[half], neg[half], frag[s][h], frag[s][h + 2]);
      }
    }
    if constexpr (kFuse) {
      for (int p = 0; p < planes; ++p) {
        uint4 next[4];
        if (p + 1 < planes) next_plane(fused, next);
        mma_chunk(acc[0], frag, xv);
#pragma unroll
        for (int q = 0; q < 4; ++q) xv[q] = next[q];
      }
    } else {
#pragma unroll
      for (int i = 0; i < TILES_M; ++i) {
        if (8 * i >= rows) break;
        for (int p = 0; p < planes; ++p) {
          uint4 next[4];
          if (p + 1 < planes)
            load_x(i, p + 1, c, next);
          else
            load_x(i + 1, 0, c, next);  // zeros past the last tile
          mma_chunk(acc[i], frag, xv);
#pragma unroll
          for (int q = 0; q < 4; ++q) xv[q] = next[q];
        }
      }
    }
  };

  if constexpr (kStream) {
    // Every thread copies 2 of a round's 512 code chunks (consecutive threads: consecutive
    // chunks of a row) and their scale words; rounds go S - 1 ahead of the one computed.
    constexpr int S = kStreamStages<B>;
    const int64_t rounds = (chunks + kRoundChunks - 1) / kRoundChunks;
    auto issue = [&](int64_t round) {
      StreamStage<B>& st = sh.stage[round % S];
      for (int q = threadIdx.x; q < kGemvRows * kRoundChunks; q += kGemvWarps * 32) {
        const int r = q / kRoundChunks, cc = q % kRoundChunks;
        const int64_t row = n0 + r, c = round * kRoundChunks + cc;
        const bool valid = row < w.n && c < chunks;
        const uint8_t* src = w.codes + (valid ? row * w.blocks * (B / 2) + c * (kChunk / 2) : 0);
        uint4* dst = &st.codes[stream_code_slot(r, cc)];
        if constexpr (B == 32) {
          cp_async<16>(dst, src, valid);
        } else {  // two 8-byte blocks; an odd block count lacks the last one
          cp_async<8>(dst, src, valid);
          cp_async<8>(reinterpret_cast<uint8_t*>(dst) + 8, src + 8,
                      valid && 2 * c + 1 < w.blocks);
        }
#pragma unroll
        for (int h = 0; h < (B == 16 ? 2 : 1); ++h) {
          const int64_t block = B == 16 ? 2 * c + h : c;
          const bool present = row < w.n && block < w.blocks;
          const int64_t byte = present ? scale_byte(w, row, block) : 0;
          cp_async<4>(&st.scale_words[h][stream_scale_slot(r, cc)],
                      w.scales + (byte & ~int64_t(3)), present);
        }
      }
      cp_async_commit();
    };
    // The warp's step of round j from the ring, in load_step's form.
    auto stage_step = [&](int64_t round, StepWeights& sw) {
      const StreamStage<B>& st = sh.stage[round % S];
      const int cc = 4 * warp + t;
      const int64_t c = round * kRoundChunks + cc;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = g + 8 * h;
        const int64_t row = n0 + r;
        const uint4 q = st.codes[stream_code_slot(r, cc)];
        sw.codes[h][0] = q.x, sw.codes[h][1] = q.y, sw.codes[h][2] = q.z, sw.codes[h][3] = q.w;
        uint32_t codes = 0;
#pragma unroll
        for (int hb = 0; hb < (B == 16 ? 2 : 1); ++hb) {
          const int64_t block = B == 16 ? 2 * c + hb : c;
          if (row >= w.n || c >= chunks || block >= w.blocks) continue;
          const uint32_t word = st.scale_words[hb][stream_scale_slot(r, cc)] >>
                                (8 * (scale_byte(w, row, block) & 3));
          if constexpr (B == 32)
            codes = 0x10000u | (word & (two_scales ? 0xFFFFu : 0xFFu));
          else
            codes |= (0x10000u << hb) | (word & 0xFFu) << (8 * hb);
        }
        sw.scale_codes[h] = codes;
      }
    };
    for (int j = 0; j < S - 1; ++j) {
      if (j < rounds)
        issue(j);
      else
        cp_async_commit();  // an empty group keeps the count of groups in flight the same
    }
    for (int64_t j = 0; j < rounds; ++j) {
      cp_async_wait<S - 2>();  // round j has landed (this thread's copies) ...
      __syncthreads();         // ... everyone's, and round j - 1's slot is free
      if (j + S - 1 < rounds)
        issue(j + S - 1);
      else
        cp_async_commit();
      const int64_t step = int64_t(kGemvWarps) * j + warp;
      if (4 * step < chunks) {
        StepWeights sw;
        stage_step(j, sw);
        run_step(step, sw);
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // the ring's memory becomes the partial sums
  } else {
    // The warp's steps are warp, warp + 8, ...; their weights are loaded two steps ahead,
    // into two register sets used in turn, so that two steps of weight bytes are in flight.
    StepWeights even, odd;
    const int64_t first = warp, stride = kGemvWarps;
    if (4 * first < chunks) load_step(first, even);
    if (4 * (first + stride) < chunks) load_step(first + stride, odd);
    for (int64_t step = first; 4 * step < chunks; step += 2 * stride) {
      run_step(step, even);
      if (4 * (step + 2 * stride) < chunks) load_step(step + 2 * stride, even);
      if (4 * (step + stride) >= chunks) break;
      run_step(step + stride, odd);
      if (4 * (step + 3 * stride) < chunks) load_step(step + 3 * stride, odd);
    }
  }

  // D rows are weight rows (g, g + 8), columns activation rows (2t, 2t + 1 of each tile)
#pragma unroll
  for (int i = 0; i < TILES_M; ++i) {
    sh.partial[warp][g][8 * i + 2 * t] = acc[i][0];
    sh.partial[warp][g][8 * i + 2 * t + 1] = acc[i][1];
    sh.partial[warp][g + 8][8 * i + 2 * t] = acc[i][2];
    sh.partial[warp][g + 8][8 * i + 2 * t + 1] = acc[i][3];
  }
  __syncthreads();
  float scale = w.format.tensor_scale ? w.tensor_scale : 1.0f;
  if (e.act_amax_bits != nullptr) scale = scale * tensor_scale(bits_float(*e.act_amax_bits));
  T* y = static_cast<T*>(e.y);
  for (int idx = threadIdx.x; idx < kGemvRows * 8 * TILES_M; idx += kGemvWarps * 32) {
    const int r = idx % kGemvRows, i = idx / kGemvRows;  // consecutive threads: consecutive n
    const int64_t col = n0 + r;
    if (i >= rows || col >= w.n) continue;
    float v = 0.0f;
#pragma unroll
    for (int k = 0; k < kGemvWarps; ++k) v += sh.partial[k][r][i];
    // rounded once each, unfused, so that every variant's translation unit (the fused ones
    // are built with --fmad=false) gives the same bits
    v = __fmul_rn(v, scale);
    if (e.bias != nullptr) v = __fadd_rn(v, load_any(e.bias, e.bias_type, col));
    y[(m0 + i) * w.n + col] = from_float<T>(v);
  }
}

// Calls f(tiles) for the MMA tiles of m rows that weight source V (0 registers, 2 the
// stream ring) instantiates: the stream kernels exist for m <= kStreamMaxRows only.
template <int V, typename F>
cudaError_t with_variant_tiles(int64_t m, F&& f) {
  if constexpr (V == 2) {
    if (m <= 8) return f(std::integral_constant<int, 1>{});
    return f(std::integral_constant<int, 2>{});
  } else {
    return with_gemv_tiles(m, f);
  }
}

}  // namespace amx::cuda
