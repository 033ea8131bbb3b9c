/*
 * Shape rules of the EmosdkMaskedAttention TensorRT plugin, free of TensorRT so that the plugin's
 * configurePlugin / onShapeChange / enqueue and the build-time test (kernels/tests/) share one
 * implementation.
 *
 *   q    [B, H, Tq, D]
 *   k    [B, H, Tk, D]
 *   v    [B, H, Tk, D]
 *   mask [B, Tk] or [1, Tk] (optional; a batch-1 mask is broadcast over the batch: stride 0)
 *
 * A dimension of -1 (unknown at build time) agrees with anything; onShapeChange and enqueue see
 * the concrete sizes. A mismatch is refused before anything runs, since every one of them would
 * otherwise be an out-of-bounds read in the kernel.
 */
#ifndef EMOSDK_ATTENTION_SHAPES_H
#define EMOSDK_ATTENTION_SHAPES_H

#include <stdint.h>

#include <string>

#include "emosdk_attention.h"

namespace emosdk {

struct TensorShape {
  int32_t rank{0};
  int64_t d[4]{0, 0, 0, 0};
};

inline bool validHeadDim(int64_t d) { return d == 16 || d == 32 || d == 64; }

inline bool agree(int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; }

/* "" when q, k, v (and the mask when nbInputs == 4) fit together; else what is wrong. */
inline std::string checkAttentionShapes(TensorShape const* in, int32_t nbInputs) {
  if (nbInputs != 3 && nbInputs != 4) return "expects 3 or 4 inputs (q, k, v[, mask])";
  char const* names[] = {"q", "k", "v"};
  for (int32_t i = 0; i < 3; ++i) {
    if (in[i].rank != 4) return std::string(names[i]) + " must be rank 4 [B, H, T, D]";
  }
  TensorShape const& q = in[0];
  TensorShape const& k = in[1];
  TensorShape const& v = in[2];
  int64_t const d = q.d[3];
  if (d >= 0 && !validHeadDim(d)) return "head_dim must be 16, 32 or 64, got " + std::to_string(d);
  auto dim = [](TensorShape const& t, int axis) { return std::to_string(t.d[axis]); };
  for (int32_t i = 1; i < 3; ++i) {
    TensorShape const& t = in[i];
    std::string const n = names[i];
    if (!agree(t.d[3], d)) return "head_dim of " + n + " is " + dim(t, 3) + ", q's " + dim(q, 3);
    if (!agree(t.d[0], q.d[0])) return "batch of " + n + " is " + dim(t, 0) + ", q's " + dim(q, 0);
    if (!agree(t.d[1], q.d[1])) return "heads of " + n + " is " + dim(t, 1) + ", q's " + dim(q, 1);
  }
  if (!agree(k.d[2], v.d[2])) return "k has " + dim(k, 2) + " keys, v " + dim(v, 2);
  if (nbInputs == 4) {
    TensorShape const& m = in[3];
    if (m.rank != 2) return "mask must be rank 2 [B, Tk] or [1, Tk]";
    if (!(agree(m.d[0], q.d[0]) || m.d[0] == 1)) {
      return "mask batch is " + dim(m, 0) + ", expected 1 or q's batch " + dim(q, 0);
    }
    if (!agree(m.d[1], k.d[2])) return "mask has " + dim(m, 1) + " keys, k " + dim(k, 2);
  }
  return "";
}

/* Element stride of the mask's batch axis: 0 broadcasts a [1, Tk] mask over the batch. */
inline int64_t maskBatchStride(TensorShape const& mask) { return mask.d[0] == 1 ? 0 : mask.d[1]; }

/* Kernel parameters for contiguous q, k, v, out and an optional mask of these (checked) shapes;
 * pointers are left NULL. */
inline EmosdkAttentionParams attentionParams(TensorShape const* in, int32_t nbInputs, float scale,
                                             bool half) {
  EmosdkAttentionParams p{};
  TensorShape const& q = in[0];
  TensorShape const& k = in[1];
  int64_t const B = q.d[0], H = q.d[1], Tq = q.d[2], Tk = k.d[2], D = q.d[3];
  p.q_stride[0] = p.o_stride[0] = H * Tq * D;
  p.q_stride[1] = p.o_stride[1] = Tq * D;
  p.q_stride[2] = p.o_stride[2] = D;
  p.k_stride[0] = p.v_stride[0] = H * Tk * D;
  p.k_stride[1] = p.v_stride[1] = Tk * D;
  p.k_stride[2] = p.v_stride[2] = D;
  p.mask_stride = nbInputs == 4 ? maskBatchStride(in[3]) : Tk;
  p.batch = static_cast<int32_t>(B);
  p.heads = static_cast<int32_t>(H);
  p.q_len = static_cast<int32_t>(Tq);
  p.kv_len = static_cast<int32_t>(Tk);
  p.head_dim = static_cast<int32_t>(D);
  p.dtype = half ? EMOSDK_F16 : EMOSDK_F32;
  p.scale = scale;
  return p;
}

}  // namespace emosdk

#endif /* EMOSDK_ATTENTION_SHAPES_H */
