/*
 * Fused masked attention for emosdk's fusion models (see emosdk_attention.h for the contract).
 *
 * Design (shapes are small: head_dim 16..64, at most a few hundred keys, many batch x head
 * pairs): one thread block per (batch, head, tile of kWarps query rows), one warp per query row.
 * The block stages a tile of kKeyTile keys and values in shared memory as fp32 (rows padded by
 * one float so that lanes reading different rows hit different banks) together with the tile's
 * key-padding mask. Each lane of a warp takes every 32nd key of the tile and keeps its own
 * online-softmax state (running max m, running sum l, accumulator acc[D]) in fp32 registers; at
 * the end the 32 partial states are merged with warp shuffles. Scores are computed in the log2
 * domain (q is pre-scaled by scale * log2(e)) so the exponentials are exp2f.
 *
 * Masked keys are skipped outright (they contribute neither to the max nor to the sum), so they
 * have no effect on the result whatever their values. A query with every key masked (or
 * kv_len == 0) gets a zero row: its merged max stays -inf and the kernel writes zeros instead of
 * dividing 0 by 0.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>

#include "emosdk_attention.h"

namespace {

constexpr int kWarps = 8;      // query rows per block, one warp each
constexpr int kThreads = kWarps * 32;
constexpr int kKeyTile = 64;   // keys staged in shared memory per step
constexpr float kLog2e = 1.4426950408889634f;
constexpr unsigned kFullMask = 0xffffffffu;

struct Strides {
  int64_t b, h, t;
};

template <typename T>
__device__ __forceinline__ float to_f32(T x);
template <>
__device__ __forceinline__ float to_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_f32<__half>(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, off));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(kFullMask, x, off);
  return x;
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
masked_attention_kernel(const T* __restrict__ q, const T* __restrict__ k,
                        const T* __restrict__ v, const float* __restrict__ mask,
                        T* __restrict__ out, Strides qs, Strides ks, Strides vs, Strides os,
                        int64_t mask_stride, int q_len, int kv_len, float scale_log2) {
  static_assert(D == 16 || D == 32 || D == 64, "head_dim must be 16, 32 or 64");
  __shared__ float k_tile[kKeyTile][D + 1];
  __shared__ float v_tile[kKeyTile][D + 1];
  __shared__ float present[kKeyTile];
  __shared__ float q_rows[kWarps][D];

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int b = blockIdx.z;
  const int h = blockIdx.y;
  const int row = blockIdx.x * kWarps + warp;
  const bool active = row < q_len;  // warp-uniform

  const T* k_bh = k + b * ks.b + h * ks.h;
  const T* v_bh = v + b * vs.b + h * vs.h;
  const float* m_b = mask != nullptr ? mask + b * mask_stride : nullptr;

  if (active) {
    const T* q_row = q + b * qs.b + h * qs.h + row * qs.t;
    for (int d = lane; d < D; d += 32) q_rows[warp][d] = to_f32(q_row[d]) * scale_log2;
  }
  __syncwarp();

  float m = -INFINITY;  // running max of this lane's scores (log2 domain)
  float l = 0.f;        // running sum of exp2(score - m)
  float acc[D];         // running sum of exp2(score - m) * v
#pragma unroll
  for (int d = 0; d < D; ++d) acc[d] = 0.f;

  for (int start = 0; start < kv_len; start += kKeyTile) {
    const int n = min(kKeyTile, kv_len - start);
    __syncthreads();  // every warp is done with the previous tile
    for (int idx = threadIdx.x; idx < n * D; idx += kThreads) {
      const int j = idx / D;  // D is a power of two: a shift
      const int d = idx % D;
      const int64_t key = start + j;
      k_tile[j][d] = to_f32(k_bh[key * ks.t + d]);
      v_tile[j][d] = to_f32(v_bh[key * vs.t + d]);
    }
    for (int j = threadIdx.x; j < n; j += kThreads) {
      present[j] = (m_b == nullptr || m_b[start + j] != 0.f) ? 1.f : 0.f;
    }
    __syncthreads();
    if (!active) continue;
    for (int j = lane; j < n; j += 32) {
      if (present[j] == 0.f) continue;  // a missing frame: no effect at all
      float s = 0.f;
#pragma unroll
      for (int d = 0; d < D; ++d) s = fmaf(q_rows[warp][d], k_tile[j][d], s);
      const float m_new = fmaxf(m, s);
      const float c = exp2f(m - m_new);  // 0 while m is still -inf
      const float p = exp2f(s - m_new);
      l = fmaf(l, c, p);
#pragma unroll
      for (int d = 0; d < D; ++d) acc[d] = fmaf(p, v_tile[j][d], acc[d] * c);
      m = m_new;
    }
  }
  if (!active) return;  // no __syncthreads below this point

  T* o_row = out + b * os.b + h * os.h + row * os.t;
  const float m_all = warp_max(m);
  if (m_all == -INFINITY) {  // every key masked, or no keys: a defined zero row
    for (int d = lane; d < D; d += 32) o_row[d] = from_f32<T>(0.f);
    return;
  }
  const float f = exp2f(m - m_all);  // rescale each lane to the common max (0 if it saw no key)
  const float inv_l = 1.f / warp_sum(l * f);  // >= 1 term equals exp2(0) = 1, so l > 0
#pragma unroll
  for (int d = 0; d < D; ++d) {
    const float a = warp_sum(acc[d] * f);
    if ((d & 31) == lane) o_row[d] = from_f32<T>(a * inv_l);
  }
}

template <typename T, int D>
cudaError_t launch(const EmosdkAttentionParams& p, cudaStream_t stream) {
  const dim3 grid((p.q_len + kWarps - 1) / kWarps, p.heads, p.batch);
  const float scale = p.scale > 0.f ? p.scale : 1.f / sqrtf(static_cast<float>(D));
  const Strides qs{p.q_stride[0], p.q_stride[1], p.q_stride[2]};
  const Strides ks{p.k_stride[0], p.k_stride[1], p.k_stride[2]};
  const Strides vs{p.v_stride[0], p.v_stride[1], p.v_stride[2]};
  const Strides os{p.o_stride[0], p.o_stride[1], p.o_stride[2]};
  masked_attention_kernel<T, D><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(p.q), static_cast<const T*>(p.k), static_cast<const T*>(p.v),
      p.mask, static_cast<T*>(p.out), qs, ks, vs, os, p.mask_stride, p.q_len, p.kv_len,
      scale * kLog2e);
  return cudaGetLastError();
}

template <typename T>
cudaError_t dispatch_head_dim(const EmosdkAttentionParams& p, cudaStream_t stream) {
  switch (p.head_dim) {
    case 16: return launch<T, 16>(p, stream);
    case 32: return launch<T, 32>(p, stream);
    default: return launch<T, 64>(p, stream);
  }
}

bool misaligned(const void* ptr, uintptr_t size) {
  return (reinterpret_cast<uintptr_t>(ptr) % size) != 0;
}

}  // namespace

extern "C" {

EMOSDK_API int emosdk_attention_forward(const EmosdkAttentionParams* p, void* stream) {
  if (p == nullptr) return EMOSDK_ERR_NULL;
  if (p->head_dim != 16 && p->head_dim != 32 && p->head_dim != 64) return EMOSDK_ERR_HEAD_DIM;
  if (p->dtype != EMOSDK_F32 && p->dtype != EMOSDK_F16) return EMOSDK_ERR_DTYPE;
  if (p->batch < 0 || p->heads < 0 || p->q_len < 0 || p->kv_len < 0 || p->batch > 65535 ||
      p->heads > 65535) {
    return EMOSDK_ERR_SHAPE;
  }
  if (p->batch == 0 || p->heads == 0 || p->q_len == 0) return EMOSDK_OK;  // nothing to write
  if (p->q == nullptr || p->out == nullptr) return EMOSDK_ERR_NULL;
  if (p->kv_len > 0 && (p->k == nullptr || p->v == nullptr)) return EMOSDK_ERR_NULL;
  const uintptr_t size = p->dtype == EMOSDK_F16 ? 2 : 4;
  if (misaligned(p->q, size) || misaligned(p->k, size) || misaligned(p->v, size) ||
      misaligned(p->out, size) || misaligned(p->mask, 4)) {
    return EMOSDK_ERR_ALIGNMENT;
  }
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const cudaError_t err =
      p->dtype == EMOSDK_F16 ? dispatch_head_dim<__half>(*p, s) : dispatch_head_dim<float>(*p, s);
  return static_cast<int>(err);
}

EMOSDK_API void emosdk_attention_contiguous(EmosdkAttentionParams* p, int32_t batch,
                                            int32_t heads, int32_t q_len, int32_t kv_len,
                                            int32_t head_dim) {
  if (p == nullptr) return;
  const int64_t D = head_dim;
  p->q_stride[0] = int64_t(heads) * q_len * D;
  p->q_stride[1] = int64_t(q_len) * D;
  p->q_stride[2] = D;
  for (int i = 0; i < 3; ++i) p->o_stride[i] = p->q_stride[i];
  p->k_stride[0] = int64_t(heads) * kv_len * D;
  p->k_stride[1] = int64_t(kv_len) * D;
  p->k_stride[2] = D;
  for (int i = 0; i < 3; ++i) p->v_stride[i] = p->k_stride[i];
  p->mask_stride = kv_len;
  p->batch = batch;
  p->heads = heads;
  p->q_len = q_len;
  p->kv_len = kv_len;
  p->head_dim = head_dim;
  p->scale = 0.f;
}

EMOSDK_API const char* emosdk_attention_error_string(int status) {
  switch (status) {
    case EMOSDK_OK: return "success";
    case EMOSDK_ERR_HEAD_DIM: return "head_dim must be 16, 32 or 64";
    case EMOSDK_ERR_DTYPE: return "dtype must be EMOSDK_F32 (0) or EMOSDK_F16 (1)";
    case EMOSDK_ERR_SHAPE: return "negative size, or batch/heads above 65535";
    case EMOSDK_ERR_NULL: return "a required pointer is NULL";
    case EMOSDK_ERR_ALIGNMENT: return "a pointer is not aligned to its element size";
    default:
      return status > 0 ? cudaGetErrorString(static_cast<cudaError_t>(status))
                        : "unknown emosdk status";
  }
}

EMOSDK_API int emosdk_attention_abi_version(void) { return EMOSDK_ATTENTION_ABI_VERSION; }

EMOSDK_API int emosdk_attention_params_size(void) {
  return static_cast<int>(sizeof(EmosdkAttentionParams));
}

EMOSDK_API int emosdk_cuda_device_count(int* status) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (status != nullptr) *status = static_cast<int>(err);
  return err == cudaSuccess ? n : 0;
}

}  // extern "C"
