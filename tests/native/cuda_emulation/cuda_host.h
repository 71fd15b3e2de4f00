// Just enough of CUDA to run the kernels of plugins/cuda/*.cuh and the C ABI of api.cu on the
// host, one std::thread per CUDA thread, so that machines without a GPU test the kernels'
// indexing and numerics (not their speed, nor the tensor-core GEMM, which needs WMMA).
// Included first (g++ -include) in place of the CUDA headers; "device memory" is host memory.
#pragma once

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define AMX_CUDA_HOST_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one block runs at a time, so a static is the block's memory
#define __align__(n) __attribute__((aligned(n)))

using std::isnan;

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3() = default;
  dim3(unsigned a, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint4 {
  uint32_t x, y, z, w;
};
struct uint2 {
  uint32_t x, y;
};
struct float4 {
  float x, y, z, w;
};
inline uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return {a, b, c, d}; }

// ---- runtime API: what api.cu calls ---------------------------------------------------------
enum cudaError_t { cudaSuccess = 0, cudaErrorNotSupported = 801 };
using cudaStream_t = struct CUstream_st*;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* count) { return *count = 1, cudaSuccess; }
inline const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaSuccess ? "cudaSuccess" : "cudaErrorNotSupported";
}
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : "not supported by the host emulation";
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}

// ---- 16-bit floats, round to nearest even like the CUDA intrinsics --------------------------
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __half2float(__half h) {
  _Float16 v;
  std::memcpy(&v, &h.bits, 2);
  return float(v);
}
inline __half __float2half_rn(float f) {
  const _Float16 v = _Float16(f);  // GCC's conversion rounds to nearest even
  __half h;
  std::memcpy(&h.bits, &v, 2);
  return h;
}
inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t bits = uint32_t(b.bits) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (std::isnan(f)) return {uint16_t((bits >> 16) | 0x0040u)};
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return {uint16_t(bits >> 16)};
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.bits; }

// ---- threads, blocks and warps ---------------------------------------------------------------
namespace emu {

// A reusable barrier for `count` threads.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const long generation = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation != generation_; });
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int count_, arrived_ = 0;
  long generation_ = 0;
};

struct Block {
  explicit Block(int threads) : all(threads) {
    for (int w = 0; w < (threads + 31) / 32; ++w) warps.emplace_back(new Barrier(32));
    lanes.resize(size_t(threads));
  }
  Barrier all;
  std::vector<std::unique_ptr<Barrier>> warps;
  std::vector<float> lanes;  // __shfl_xor_sync's exchange
};

inline thread_local Block* block = nullptr;
inline std::mutex atomic_mutex;

}  // namespace emu

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

inline void __syncthreads() { emu::block->all.wait(); }

inline float __shfl_xor_sync(unsigned, float v, int offset) {
  const unsigned t = threadIdx.x, base = t & ~31u;
  emu::Barrier& warp = *emu::block->warps[t / 32];
  emu::block->lanes[t] = v;
  warp.wait();
  const float other = emu::block->lanes[base + ((t - base) ^ unsigned(offset))];
  warp.wait();
  return other;
}

inline unsigned atomicMax(unsigned* p, unsigned v) {
  std::lock_guard<std::mutex> lock(emu::atomic_mutex);
  const unsigned old = *p;
  if (v > old) *p = v;
  return old;
}

inline void __syncwarp(unsigned = 0xFFFFFFFFu) { emu::block->warps[threadIdx.x / 32]->wait(); }

// ---- WMMA: every lane holds the whole 16x16 tile (the warp's lanes compute the same thing) ----
namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  float v[16][16];  // element (row, column) of the tile
};

inline float as_float(const __nv_bfloat16& x) { return __bfloat162float(x); }
inline float as_float(float x) { return x; }

template <typename Use, int M, int N, int K, typename T, typename L>
void fill_fragment(fragment<Use, M, N, K, T, L>& f, float value) {
  for (auto& row : f.v)
    for (float& x : row) x = value;
}

// A (16 x 16, row-major in memory): element (r, k) at p[r * ldm + k].
template <int M, int N, int K, typename T>
void load_matrix_sync(fragment<matrix_a, M, N, K, T, row_major>& f, const T* p, unsigned ldm) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r][c] = as_float(p[r * ldm + c]);
}

// B (16 x 16, column-major in memory): element (k, n) at p[n * ldm + k].
template <int M, int N, int K, typename T>
void load_matrix_sync(fragment<matrix_b, M, N, K, T, col_major>& f, const T* p, unsigned ldm) {
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 16; ++n) f.v[k][n] = as_float(p[n * ldm + k]);
}

template <int M, int N, int K, typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
  fragment<accumulator, M, N, K, float> out;
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) {
      float sum = c.v[r][n];
      for (int k = 0; k < 16; ++k) sum += a.v[r][k] * b.v[k][n];
      out.v[r][n] = sum;
    }
  d = out;
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                       layout_t layout) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.v[r][c];
}

}  // namespace nvcuda::wmma
