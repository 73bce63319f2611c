// Fused softmax cross-entropy with label smoothing; see softmax_xent.cuh.
#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/softmax_xent.cuh"

namespace vit::cuda {

namespace {
constexpr int kWarps = 4;
}

template <typename T>
__global__ void softmax_xent_fwd_kernel(const T* __restrict__ logits, const int* __restrict__ labels,
                                        float* __restrict__ losses, T* __restrict__ dlogits, int B, int C,
                                        float smoothing) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarps + (threadIdx.x >> 5);
  if (row >= B) return;
  const T* z = logits + size_t(row) * C;
  const int y = labels[row];
  float mx = -INFINITY, sz = 0.f;
  for (int j = lane; j < C; j += 32) {
    const float v = to_f32(z[j]);
    mx = fmaxf(mx, v);
    sz += v;
  }
  mx = warp_max(mx);
  sz = warp_sum(sz);
  float se = 0.f;
  for (int j = lane; j < C; j += 32) se += expf(to_f32(z[j]) - mx);
  se = warp_sum(se);
  const float lse = mx + logf(se);
  const bool valid = (y >= 0 && y < C);
  if (losses && lane == 0) {
    losses[row] = valid ? lse - (1.f - smoothing) * to_f32(z[y]) - (smoothing / C) * sz : NAN;
  }
  if (dlogits) {
    const float invB = 1.f / B, off = smoothing / C;
    for (int j = lane; j < C; j += 32) {
      const float pj = expf(to_f32(z[j]) - lse);
      const float t = (j == y ? 1.f - smoothing : 0.f) + off;
      dlogits[size_t(row) * C + j] = from_f32<T>(valid ? (pj - t) * invB : NAN);
    }
  }
}

// One block: fixed-order sum of B losses, divided by B.
__global__ void mean_kernel(const float* __restrict__ x, float* out, int n) {
  __shared__ float s[256];
  float acc = 0.f;
  for (int i = threadIdx.x; i < n; i += 256) acc += x[i];
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w = 128; w > 0; w >>= 1) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = s[0] / n;
}

template <typename T>
void softmax_xent_fwd_bwd(const T* logits, const int* labels, float* losses, float* mean_loss, T* dlogits, int B, int C,
                          float smoothing, cudaStream_t stream) {
  if (B <= 0) return;
  if (mean_loss && !losses) throw std::invalid_argument("softmax_xent: mean_loss needs the losses buffer");
  softmax_xent_fwd_kernel<T>
      <<<ceil_div(size_t(B), kWarps), kWarps * 32, 0, stream>>>(logits, labels, losses, dlogits, B, C, smoothing);
  VIT_LAUNCH_CHECK();
  if (mean_loss) {
    mean_kernel<<<1, 256, 0, stream>>>(losses, mean_loss, B);
    VIT_LAUNCH_CHECK();
  }
}
template <typename T>
void softmax_xent_fwd(const T* logits, const int* labels, float* losses, float* mean_loss, int B, int C,
                      float smoothing, cudaStream_t stream) {
  softmax_xent_fwd_bwd<T>(logits, labels, losses, mean_loss, nullptr, B, C, smoothing, stream);
}
template <typename T>
void softmax_xent_bwd(const T* logits, const int* labels, T* dlogits, int B, int C, float smoothing,
                      cudaStream_t stream) {
  softmax_xent_fwd_bwd<T>(logits, labels, nullptr, nullptr, dlogits, B, C, smoothing, stream);
}

#define VIT_INST(T)                                                                                       \
  template void softmax_xent_fwd<T>(const T*, const int*, float*, float*, int, int, float, cudaStream_t); \
  template void softmax_xent_bwd<T>(const T*, const int*, T*, int, int, float, cudaStream_t);             \
  template void softmax_xent_fwd_bwd<T>(const T*, const int*, float*, float*, T*, int, int, float, cudaStream_t);
VIT_INST(float)
VIT_INST(bf16)
#undef VIT_INST

}  // namespace vit::cuda
