/*
 * The fused attention kernel on a GPU, through its C ABI, for compute-sanitizer (memcheck,
 * racecheck, synccheck, initcheck) and as a check against a float64 CPU reference: fp32 and fp16,
 * head_dim 16/32/64, odd lengths (one key past a 64-key tile), a [B, Tk] mask, a [1, Tk] mask
 * broadcast over a batch of 3 (mask stride 0, as the TensorRT plugin passes it), rows with every
 * key masked (zeros) and no keys at all. Each tensor is its own cudaMalloc of the exact size, so
 * memcheck sees any read past an end.
 *
 * Built with the kernels (kernels/CMakeLists.txt, EMOSDK_BUILD_TESTS); run by tools/gpu_check.py:
 *   compute-sanitizer --tool memcheck --error-exitcode 3 build/gpu_check/sanitize_attention
 * Exit: 0 pass, 1 wrong result, 2 CUDA error, 77 no CUDA device (nothing ran).
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "emosdk_attention.h"

namespace {

struct Case {
  int B, H, Tq, Tk, D;
  bool half;
  int maskRows;  // 0: no mask; 1: one [1, Tk] row broadcast; B: [B, Tk]
  bool allMaskedRow;
};

unsigned gState = 12345u;
float uniform() {
  gState = gState * 1664525u + 1013904223u;
  return static_cast<float>(gState >> 8) / static_cast<float>(1u << 24);
}

#define CUDA_OK(x)                                                                         \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(2);                                                                        \
    }                                                                                      \
  } while (0)

template <typename T>
T* upload(std::vector<float> const& host, bool half) {
  void* dev = nullptr;
  size_t const n = host.size();
  if (half) {
    std::vector<__half> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = __float2half(host[i]);
    CUDA_OK(cudaMalloc(&dev, n * sizeof(__half) + (n == 0)));
    if (n) CUDA_OK(cudaMemcpy(dev, h.data(), n * sizeof(__half), cudaMemcpyHostToDevice));
  } else {
    CUDA_OK(cudaMalloc(&dev, n * sizeof(float) + (n == 0)));
    if (n) CUDA_OK(cudaMemcpy(dev, host.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  }
  return static_cast<T*>(dev);
}

float rounded(float x, bool half) { return half ? __half2float(__float2half(x)) : x; }

bool run(Case const& c) {
  size_t const nq = size_t(c.B) * c.H * c.Tq * c.D, nk = size_t(c.B) * c.H * c.Tk * c.D;
  std::vector<float> q(nq), k(nk), v(nk), mask(size_t(c.maskRows) * c.Tk);
  for (auto& x : q) x = rounded(2.f * uniform() - 1.f, c.half);
  for (auto& x : k) x = rounded(2.f * uniform() - 1.f, c.half);
  for (auto& x : v) x = rounded(2.f * uniform() - 1.f, c.half);
  for (auto& x : mask) x = uniform() < 0.3f ? 0.f : 1.f;
  if (c.allMaskedRow && c.maskRows > 1) {
    for (int j = 0; j < c.Tk; ++j) mask[j] = 0.f;  // batch row 0: every key missing
  }
  EmosdkAttentionParams p{};
  emosdk_attention_contiguous(&p, c.B, c.H, c.Tq, c.Tk, c.D);
  p.dtype = c.half ? EMOSDK_F16 : EMOSDK_F32;
  p.q = upload<void>(q, c.half);
  p.k = upload<void>(k, c.half);
  p.v = upload<void>(v, c.half);
  float* dmask = c.maskRows ? upload<float>(mask, false) : nullptr;
  p.mask = dmask;
  p.mask_stride = c.maskRows == 1 ? 0 : c.Tk;
  void* out = nullptr;
  size_t const esize = c.half ? sizeof(__half) : sizeof(float);
  CUDA_OK(cudaMalloc(&out, nq * esize));
  int const status = emosdk_attention_forward(&p, nullptr);
  if (status != EMOSDK_OK) {
    std::printf("launch failed: %s\n", emosdk_attention_error_string(status));
    std::exit(2);
  }
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> got(nq);
  if (c.half) {
    std::vector<__half> h(nq);
    CUDA_OK(cudaMemcpy(h.data(), out, nq * esize, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < nq; ++i) got[i] = __half2float(h[i]);
  } else {
    CUDA_OK(cudaMemcpy(got.data(), out, nq * esize, cudaMemcpyDeviceToHost));
  }
  double worst = 0;
  double const scale = 1.0 / std::sqrt(double(c.D));
  std::vector<double> w(c.Tk);
  for (int b = 0; b < c.B; ++b) {
    float const* m = c.maskRows == 0 ? nullptr : &mask[size_t(c.maskRows == 1 ? 0 : b) * c.Tk];
    for (int h = 0; h < c.H; ++h) {
      for (int i = 0; i < c.Tq; ++i) {
        float const* qi = &q[((size_t(b) * c.H + h) * c.Tq + i) * c.D];
        double mx = -INFINITY;
        for (int j = 0; j < c.Tk; ++j) {
          w[j] = -INFINITY;
          if (m != nullptr && m[j] == 0.f) continue;
          float const* kj = &k[((size_t(b) * c.H + h) * c.Tk + j) * c.D];
          double s = 0;
          for (int d = 0; d < c.D; ++d) s += double(qi[d]) * kj[d];
          w[j] = s * scale;
          mx = std::fmax(mx, w[j]);
        }
        double sum = 0;
        for (int j = 0; j < c.Tk; ++j) sum += std::isinf(w[j]) ? 0.0 : std::exp(w[j] - mx);
        for (int d = 0; d < c.D; ++d) {
          double ref = 0;
          for (int j = 0; j < c.Tk && sum > 0; ++j) {
            if (std::isinf(w[j])) continue;
            ref += std::exp(w[j] - mx) / sum * v[((size_t(b) * c.H + h) * c.Tk + j) * c.D + d];
          }
          double const g = got[((size_t(b) * c.H + h) * c.Tq + i) * c.D + d];
          worst = std::fmax(worst, std::fabs(g - ref));
        }
      }
    }
  }
  double const tol = c.half ? 5e-3 : 1e-5;
  bool const ok = worst <= tol;
  std::printf("%s B%d H%d Tq%d Tk%d D%d %s mask=%d: max err %.3g (<= %.0e)\n", ok ? "ok  " : "FAIL",
              c.B, c.H, c.Tq, c.Tk, c.D, c.half ? "fp16" : "fp32", c.maskRows, worst, tol);
  CUDA_OK(cudaFree(const_cast<void*>(p.q)));
  CUDA_OK(cudaFree(const_cast<void*>(p.k)));
  CUDA_OK(cudaFree(const_cast<void*>(p.v)));
  if (dmask != nullptr) CUDA_OK(cudaFree(dmask));
  CUDA_OK(cudaFree(out));
  return ok;
}

}  // namespace

int main() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: nothing ran\n");
    return 77;
  }
  Case const cases[] = {
      {1, 4, 25, 6, 16, false, 1, false},   {2, 4, 6, 25, 16, true, 2, true},
      {3, 4, 75, 16, 16, true, 1, false},   {3, 4, 16, 75, 16, false, 1, false},
      {1, 4, 150, 150, 16, true, 1, false}, {2, 3, 7, 65, 32, false, 2, true},
      {1, 2, 33, 129, 64, true, 0, false},  {3, 1, 9, 17, 64, false, 3, true},
      {2, 2, 5, 0, 16, true, 0, false},
  };
  int failed = 0;
  for (auto const& c : cases) failed += run(c) ? 0 : 1;
  std::printf("%d passed, %d failed\n", int(sizeof(cases) / sizeof(cases[0])) - failed, failed);
  return failed == 0 ? 0 : 1;
}
