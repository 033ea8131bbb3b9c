/*
 * emosdk fused masked attention: the C ABI of libemosdk_attention.so.
 *
 * out[b, h, i, :] = sum_j softmax_j(scale * <q[b, h, i, :], k[b, h, j, :]>) * v[b, h, j, :]
 * over the keys j whose mask[b, j] != 0 (1 = present frame, 0 = missing frame).
 * A query whose keys are all masked gets an all-zero output row (never NaN).
 *
 * Queries come from one modality and keys/values from the other (cross-attention), or all three
 * from the same sequence (self-attention). head_dim is 16, 32 or 64; the data type is fp32, or
 * fp16 with fp32 accumulation (softmax statistics and the weighted sum are fp32, the output is
 * rounded to fp16 once). The mask is always fp32 [batch, kv_len] (a batch stride may be given).
 *
 * Tensors are addressed by element strides for the batch, head and sequence axes; the last
 * (head_dim) axis must be contiguous. So [B, H, T, D] and [B, T, H, D] layouts both work without
 * a copy. Used by ctypes (sdk/emosdk/native.py) and by the TensorRT plugin.
 */
#ifndef EMOSDK_ATTENTION_H
#define EMOSDK_ATTENTION_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define EMOSDK_API __declspec(dllexport)
#else
#define EMOSDK_API __attribute__((visibility("default")))
#endif

#define EMOSDK_ATTENTION_ABI_VERSION 1

enum EmosdkDtype { EMOSDK_F32 = 0, EMOSDK_F16 = 1 };

/* Status codes (0 = success); > 0 codes are cudaError_t values from the launch. */
enum EmosdkStatus {
  EMOSDK_OK = 0,
  EMOSDK_ERR_HEAD_DIM = -1,   /* head_dim not in {16, 32, 64} */
  EMOSDK_ERR_DTYPE = -2,      /* dtype not EMOSDK_F32 / EMOSDK_F16 */
  EMOSDK_ERR_SHAPE = -3,      /* negative size, or batch/heads beyond the grid limits */
  EMOSDK_ERR_NULL = -4,       /* a required pointer is NULL */
  EMOSDK_ERR_ALIGNMENT = -5   /* a pointer is not aligned to its element size */
};

typedef struct EmosdkAttentionParams {
  const void* q;      /* [batch, heads, q_len, head_dim] via q_stride */
  const void* k;      /* [batch, heads, kv_len, head_dim] via k_stride */
  const void* v;      /* [batch, heads, kv_len, head_dim] via v_stride */
  const float* mask;  /* [batch, kv_len] fp32, != 0 = present; NULL = every key present */
  void* out;          /* [batch, heads, q_len, head_dim] via o_stride, same dtype as q */
  int64_t q_stride[3]; /* element strides of the batch, head and sequence axes */
  int64_t k_stride[3];
  int64_t v_stride[3];
  int64_t o_stride[3];
  int64_t mask_stride; /* element stride of the mask's batch axis (0 broadcasts one row) */
  int32_t batch;
  int32_t heads;
  int32_t q_len;
  int32_t kv_len;
  int32_t head_dim;
  int32_t dtype;       /* EmosdkDtype */
  float scale;         /* softmax scale; <= 0 means 1/sqrt(head_dim) */
} EmosdkAttentionParams;

/* Enqueue the kernel on `stream` (a cudaStream_t; NULL = the legacy default stream).
 * Returns EMOSDK_OK, a negative EmosdkStatus, or a positive cudaError_t of the launch. */
EMOSDK_API int emosdk_attention_forward(const EmosdkAttentionParams* params, void* stream);

/* Fill `params` with contiguous [B, H, T, D] strides and the defaults above. */
EMOSDK_API void emosdk_attention_contiguous(EmosdkAttentionParams* params, int32_t batch,
                                            int32_t heads, int32_t q_len, int32_t kv_len,
                                            int32_t head_dim);

/* A static message for a status code returned above. */
EMOSDK_API const char* emosdk_attention_error_string(int status);

/* EMOSDK_ATTENTION_ABI_VERSION of the library (checked by the Python loader). */
EMOSDK_API int emosdk_attention_abi_version(void);

/* sizeof(EmosdkAttentionParams), so a binding can check its mirror of the struct. */
EMOSDK_API int emosdk_attention_params_size(void);

/* Number of usable CUDA devices (0 when the driver or device is missing); *status gets the
 * cudaError_t of cudaGetDeviceCount so callers can say why. */
EMOSDK_API int emosdk_cuda_device_count(int* status);

#ifdef __cplusplus
}
#endif

#endif /* EMOSDK_ATTENTION_H */
