// AdamW over the arena in one launch, and the deterministic sum of squares; see adamw.cuh.
#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/cuda_common.cuh"

namespace vit::cuda {

__global__ void sum_squares_partial_kernel(const float* __restrict__ x, size_t n, double* __restrict__ partial) {
  __shared__ double s[256];
  double acc = 0.0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const double v = x[i];
    acc += v * v;
  }
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w = 128; w > 0; w >>= 1) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}
__global__ void sum_partials_kernel(const double* __restrict__ partial, int n, double* out) {
  __shared__ double s[256];
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += 256) acc += partial[i];
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w = 128; w > 0; w >>= 1) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = s[0];
}

void sum_squares(const float* x, size_t n, double* out, double* scratch, cudaStream_t stream) {
  sum_squares_partial_kernel<<<kSumSqBlocks, 256, 0, stream>>>(x, n, scratch);
  VIT_LAUNCH_CHECK();
  sum_partials_kernel<<<1, 256, 0, stream>>>(scratch, kSumSqBlocks, out);
  VIT_LAUNCH_CHECK();
}

__global__ void adamw_step_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                  float* __restrict__ v, bf16* __restrict__ p_bf16, size_t n, size_t n_decay,
                                  AdamWParams hp, const AdamWParams* __restrict__ hp_dev,
                                  const double* __restrict__ grad_sumsq, float clip_norm) {
  if (hp_dev) hp = *hp_dev;
  float scale = hp.grad_scale;
  if (grad_sumsq && clip_norm > 0.f) {  // as vit::ViT::adamw_step: only when norm > clip
    const double norm = sqrt(*grad_sumsq);
    if (norm > clip_norm) scale *= float(clip_norm / (norm + 1e-6));
  }
  // Constants computed in double and rounded once, exactly as vit::cpu::adamw_step.
  const double bc1 = 1.0 - pow(double(hp.beta1), double(hp.step));
  const double bc2 = 1.0 - pow(double(hp.beta2), double(hp.step));
  const float step_size = float(hp.lr / bc1), bc2_sqrt = float(sqrt(bc2));
  const float decay = float(1.0 - double(hp.lr) * hp.weight_decay);
  const float b1 = hp.beta1, b2 = hp.beta2, eps = hp.eps;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float gi = g[i] * scale;
    float pi = p[i];
    if (i < n_decay) pi *= decay;
    const float mi = b1 * m[i] + (1.f - b1) * gi;
    const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    pi -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    p[i] = pi;
    if (p_bf16) p_bf16[i] = __float2bfloat16_rn(pi);
  }
}

void adamw_step(float* p, const float* g, float* m, float* v, size_t n, size_t n_decay, const AdamWParams& hp,
                cudaStream_t stream, bf16* p_bf16, const AdamWParams* hp_dev, const double* grad_sumsq,
                float clip_norm) {
  if (!n) return;
  adamw_step_kernel<<<elementwise_grid(n, 256), 256, 0, stream>>>(p, g, m, v, p_bf16, n, n_decay, hp, hp_dev,
                                                                  grad_sumsq, clip_norm);
  VIT_LAUNCH_CHECK();
}

}  // namespace vit::cuda
