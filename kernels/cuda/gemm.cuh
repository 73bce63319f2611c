// GEMMs through cuBLASLt: the linear layers of the ViT, torch weight layout.
//
//   linear_fwd:     y (M, N)  = x (M, K) @ w (N, K)^T + b (N)       bias fused as a cuBLASLt epilogue
//   linear_residual_fwd: y = x @ w^T + b + residual            the residual add as the GEMM's C (beta = 1)
//   linear_bwd_dx:  dx (M, K) = dy (M, N) @ w (N, K)
//   linear_bwd_dw:  dw (N, K) += dy^T @ x                            fp32 gradient, beta = 1
//   bias_grad:      db (N)    += colsum(dy)                          deterministic two-pass, no atomics
//   linear_bwd_dw_db: dw from the GEMM, db from bias_grad (not the BGRADB epilogue: see gemm.cu)
//
// Row-major -> column-major: cuBLAS sees a row-major (R, C) array as the column-major
// (C, R) matrix, i.e. its transpose. So y^T (N, M) = w^T' ... concretely
//   fwd: D = y^T (m=N, n=M) = op(A) op(B) with A = w stored col-major (K, N) ld K, op = T;
//        B = x stored col-major (K, M) ld K, op = N;  k = K; the bias runs along m = N.
//   dx:  D = dx^T (m=K, n=M) = A op(B): A = w as col-major (K, N) ld K, op = N;
//        B = dy as col-major (N, M) ld N, op = N;  k = N.
//   dw:  D = dw^T (m=K, n=N) = A op(B): A = x as col-major (K, M) ld K, op = N;
//        B = dy as col-major (N, M) ld N, op = T;  k = M.
// Inputs are float (checking mode: CUBLAS_COMPUTE_32F, no TF32) or bf16 (fp32 accumulate).
// bf16 inputs may write an fp32 output (the head's logits, every weight gradient).
// If cuBLASLt offers no algorithm for a fused-bias epilogue, the plan falls back to a
// plain GEMM plus bias_add; if it offers none at all, to cublasGemmEx.
// GELU is NOT fused: cuBLASLt's GELU epilogue is the tanh approximation, and torchvision's
// ViT uses exact erf (kernels/cuda/gelu.cu).
// Test: vitengine_gpu_tests --gtest_filter='*Linear*'; bench: bench_ops_cuda --benchmark_filter=Gemm
#pragma once
#include <cuda_runtime.h>
#include <library_types.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "kernels/cuda/cuda_common.cuh"

namespace vit::cuda {

template <typename T>
constexpr cudaDataType cuda_dtype();
template <>
constexpr cudaDataType cuda_dtype<float>() {
  return CUDA_R_32F;
}
template <>
constexpr cudaDataType cuda_dtype<__nv_bfloat16>() {
  return CUDA_R_16BF;
}

// Handles plus a workspace; non-copyable. Create it outside the training step (it may
// allocate the workspace); every call after the first of a shape reuses a cached plan.
class GemmContext {
 public:
  // Owns a workspace of `workspace_bytes` (cudaMalloc here, once).
  explicit GemmContext(size_t workspace_bytes = size_t(32) << 20);
  // Borrows a workspace (e.g. a slice of an activation arena).
  GemmContext(void* workspace, size_t workspace_bytes);
  ~GemmContext();
  GemmContext(const GemmContext&) = delete;
  GemmContext& operator=(const GemmContext&) = delete;

  // Column-major core: D (m x n, ldd) = alpha * op(A) op(B) + beta * C (+ bias[m] if bias),
  // C = D unless given (same type and layout as D). A/B element type ab, C/D element type d.
  // Returns true if the bias was applied.
  bool matmul(bool transa, bool transb, int m, int n, int k, const void* A, int lda, const void* B, int ldb, void* D,
              int ldd, cudaDataType ab, cudaDataType d, float alpha, float beta, const void* bias, cudaStream_t stream,
              const void* C = nullptr);

  size_t plans() const { return cache_.size(); }

 private:
  struct Plan;
  void init();
  void* lt_ = nullptr;    // cublasLtHandle_t
  void* blas_ = nullptr;  // cublasHandle_t
  void* ws_ = nullptr;
  size_t ws_bytes_ = 0;
  bool owns_ws_ = false;
  using Key = std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int>;
  std::map<Key, Plan*> cache_;
};

// y (M, N) = x (M, K) @ w (N, K)^T + b (N); b may be null. TIn = TOut, or TIn = bf16 with TOut = float.
template <typename TIn, typename TOut>
void linear_fwd(GemmContext& ctx, const TIn* x, const TIn* w, const TOut* b, TOut* y, int M, int K, int N,
                cudaStream_t stream);
// y (M, N) = x (M, K) @ w (N, K)^T + b (N) + residual (M, N): the residual add fused into the GEMM
// (C = residual, beta = 1). y must not alias x; it may alias residual.
template <typename T>
void linear_residual_fwd(GemmContext& ctx, const T* x, const T* w, const T* b, const T* residual, T* y, int M, int K,
                         int N, cudaStream_t stream);
// dx (M, K) = dy (M, N) @ w (N, K)   (overwrites)
template <typename T>
void linear_bwd_dx(GemmContext& ctx, const T* dy, const T* w, T* dx, int M, int K, int N, cudaStream_t stream);
// dw (N, K) += dy (M, N)^T @ x (M, K)   (fp32 gradient, accumulates)
template <typename T>
void linear_bwd_dw(GemmContext& ctx, const T* x, const T* dy, float* dw, int M, int K, int N, cudaStream_t stream);
// dw += dy^T @ x and db += colsum(dy) (if db, by bias_grad: deterministic, no atomics).
// scratch: bias_grad_scratch_floats(M, N) floats (>= N), 16-byte aligned.
template <typename T>
void linear_bwd_dw_db(GemmContext& ctx, const T* x, const T* dy, float* dw, float* db, float* scratch, int M, int K,
                      int N, cudaStream_t stream);
// db (N) += sum over rows of dy (M, N). scratch: bias_grad_scratch_floats(M, N) floats.
template <typename T>
void bias_grad(const T* dy, float* db, float* scratch, int M, int N, cudaStream_t stream);
size_t bias_grad_scratch_floats(int M, int N);
// y (M, N) += b (N)   (the fallback when the epilogue is not available)
template <typename T>
void bias_add(T* y, const T* b, int M, int N, cudaStream_t stream);

// The CPU signature (kernels/cpu/ops.h) in one call: dx = (if dx), dw +=, db += (if db).
template <typename T>
void linear_bwd(GemmContext& ctx, const T* x, const T* w, const T* dy, T* dx, float* dw, float* db, float* scratch,
                int M, int K, int N, cudaStream_t stream);

}  // namespace vit::cuda
