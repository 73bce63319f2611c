// cuBLASLt GEMMs for the linear layers; see gemm.cuh for the row-major -> column-major mapping.
#include <cublasLt.h>
#include <cublas_v2.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/cuda/gemm.cuh"

namespace vit::cuda {

struct GemmContext::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool lt_ok = false;    // cuBLASLt found an algorithm (else cublasGemmEx)
  bool bias_ok = false;  // ... with the bias epilogue fused
};

namespace {
uint32_t alignment_of(const void* p) {
  uintptr_t v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && (v % a) != 0) a >>= 1;
  return a;
}
cublasLtHandle_t LT(void* p) { return static_cast<cublasLtHandle_t>(p); }
cublasHandle_t BL(void* p) { return static_cast<cublasHandle_t>(p); }
}  // namespace

void GemmContext::init() {
  cublasLtHandle_t lt = nullptr;
  VIT_CHECK(cublasLtCreate(&lt));
  lt_ = lt;
  cublasHandle_t bl = nullptr;
  VIT_CHECK(cublasCreate(&bl));
  blas_ = bl;
  // Pointer mode host (alpha/beta on the host); default math = no TF32 with COMPUTE_32F.
  VIT_CHECK(cublasSetPointerMode(bl, CUBLAS_POINTER_MODE_HOST));
  if (ws_ && ws_bytes_) VIT_CHECK(cublasSetWorkspace(bl, ws_, ws_bytes_));
}

GemmContext::GemmContext(size_t workspace_bytes) : ws_bytes_(workspace_bytes), owns_ws_(true) {
  if (ws_bytes_) VIT_CHECK(cudaMalloc(&ws_, ws_bytes_));
  init();
}
GemmContext::GemmContext(void* workspace, size_t workspace_bytes)
    : ws_(workspace), ws_bytes_(workspace_bytes), owns_ws_(false) {
  init();
}
GemmContext::~GemmContext() {
  for (auto& kv : cache_) {
    Plan* p = kv.second;
    if (p->a) VIT_CHECK_NOTHROW(cublasLtMatrixLayoutDestroy(p->a));
    if (p->b) VIT_CHECK_NOTHROW(cublasLtMatrixLayoutDestroy(p->b));
    if (p->d) VIT_CHECK_NOTHROW(cublasLtMatrixLayoutDestroy(p->d));
    if (p->desc) VIT_CHECK_NOTHROW(cublasLtMatmulDescDestroy(p->desc));
    delete p;
  }
  if (blas_) VIT_CHECK_NOTHROW(cublasDestroy(BL(blas_)));
  if (lt_) VIT_CHECK_NOTHROW(cublasLtDestroy(LT(lt_)));
  if (owns_ws_ && ws_) VIT_CHECK_NOTHROW(cudaFree(ws_));
}

bool GemmContext::matmul(bool transa, bool transb, int m, int n, int k, const void* A, int lda, const void* B, int ldb,
                         void* D, int ldd, cudaDataType ab, cudaDataType dt, float alpha, float beta, const void* bias,
                         cudaStream_t stream, const void* C) {
  if (m <= 0 || n <= 0 || k <= 0) throw std::invalid_argument("gemm: empty shape");
  if (!C) C = D;
  const uint32_t al_a = alignment_of(A), al_b = alignment_of(B), al_d = std::min(alignment_of(D), alignment_of(C));
  const uint32_t al_bias = bias ? alignment_of(bias) : 0;
  Key key{
      int(transa),          int(transb),      m,         n,         k,         lda,         ldb, ldd, int(ab), int(dt),
      int(bias != nullptr), int(beta != 0.f), int(al_a), int(al_b), int(al_d), int(al_bias)};
  Plan* plan = nullptr;
  auto it = cache_.find(key);
  if (it != cache_.end()) {
    plan = it->second;
  } else {
    plan = new Plan();
    cache_[key] = plan;
    VIT_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = transa ? CUBLAS_OP_T : CUBLAS_OP_N, tb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    VIT_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    VIT_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    // stored shapes (column-major): A is (m x k) or, transposed, (k x m); B is (k x n) or (n x k)
    VIT_CHECK(cublasLtMatrixLayoutCreate(&plan->a, ab, transa ? k : m, transa ? m : k, lda));
    VIT_CHECK(cublasLtMatrixLayoutCreate(&plan->b, ab, transb ? n : k, transb ? k : n, ldb));
    VIT_CHECK(cublasLtMatrixLayoutCreate(&plan->d, dt, m, n, ldd));
    cublasLtMatmulPreference_t pref = nullptr;
    VIT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t wsb = ws_bytes_;
    VIT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)));
    VIT_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)));
    VIT_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)));
    VIT_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof(al_d)));
    VIT_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof(al_d)));
    // Split-K partial sums only in the compute type (fp32): the in-place and output-type
    // schemes would round partial sums to bf16. (All schemes are deterministic.)
    uint32_t red = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    VIT_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof(red)));
    auto try_heuristic = [&](cublasLtEpilogue_t epi) {
      VIT_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
      if (epi == CUBLASLT_EPILOGUE_BIAS) {
        int32_t bt = int32_t(dt);  // the bias has D's element type
        VIT_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
        VIT_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
      }
      cublasLtMatmulHeuristicResult_t res{};
      int returned = 0;
      cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(LT(lt_), plan->desc, plan->a, plan->b, plan->d, plan->d, pref,
                                                         1, &res, &returned);
      if (st != CUBLAS_STATUS_SUCCESS || returned == 0) return false;
      plan->algo = res.algo;
      return true;
    };
    // The bias epilogue is only tried on a 16-byte-aligned bias (there is no alignment
    // preference for it); otherwise the caller adds the bias with bias_add.
    if (bias && al_bias >= 16 && try_heuristic(CUBLASLT_EPILOGUE_BIAS)) {
      plan->lt_ok = plan->bias_ok = true;
    } else if (try_heuristic(CUBLASLT_EPILOGUE_DEFAULT)) {
      plan->lt_ok = true;
    }
    VIT_CHECK(cublasLtMatmulPreferenceDestroy(pref));
  }
  if (plan->lt_ok) {
    if (plan->bias_ok)
      VIT_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    cublasStatus_t st = cublasLtMatmul(LT(lt_), plan->desc, &alpha, A, plan->a, B, plan->b, &beta, C, plan->d, D,
                                       plan->d, &plan->algo, ws_, ws_bytes_, stream);
    if (st == CUBLAS_STATUS_SUCCESS) return plan->bias_ok;
    if (st != CUBLAS_STATUS_NOT_SUPPORTED) VIT_CHECK(st);
    plan->lt_ok = plan->bias_ok = false;  // not supported after all: use cublasGemmEx from now on
  }
  if (C != D && beta != 0.f) {  // cublasGemmEx accumulates in place: D = C first
    const size_t es = dt == CUDA_R_32F ? 4 : 2;
    VIT_CHECK(cudaMemcpy2DAsync(D, size_t(ldd) * es, C, size_t(ldd) * es, size_t(m) * es, n, cudaMemcpyDeviceToDevice,
                                stream));
  }
  VIT_CHECK(cublasSetStream(BL(blas_), stream));
  VIT_CHECK(cublasGemmEx(BL(blas_), transa ? CUBLAS_OP_T : CUBLAS_OP_N, transb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
                         &alpha, A, ab, lda, B, ab, ldb, &beta, D, dt, ldd, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return false;
}

// ---- bias add (epilogue fallback) ----
template <typename T>
__global__ void bias_add_fwd_kernel(T* y, const T* b, int M, int N) {
  size_t n = size_t(M) * N;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<T>(to_f32(y[i]) + to_f32(b[i % N]));
}
template <typename T>
void bias_add(T* y, const T* b, int M, int N, cudaStream_t stream) {
  size_t n = size_t(M) * N;
  bias_add_fwd_kernel<T><<<elementwise_grid(n, 256), 256, 0, stream>>>(y, b, M, N);
  VIT_LAUNCH_CHECK();
}

// ---- bias gradient: column sums, two deterministic passes ----
// Pass 1: grid (ceil(N/32), chunks), block (32, 8): each block sums a fixed row range of
// 32 columns, then reduces its 8 row-lanes in a fixed order -> scratch[chunk][col].
// Pass 2: one thread per column sums the chunks in order and adds into db.
namespace {
int bias_grad_chunks(int M) { return int(std::min<size_t>(ceil_div(size_t(M), 64), 256)); }
}  // namespace
size_t bias_grad_scratch_floats(int M, int N) { return size_t(bias_grad_chunks(M)) * N; }

template <typename T>
__global__ void bias_grad_partial_kernel(const T* dy, float* scratch, int M, int N, int rows_per_chunk) {
  __shared__ float s[8][33];
  const int col = blockIdx.x * 32 + threadIdx.x;
  const int r0 = blockIdx.y * rows_per_chunk;
  const int r1 = min(M, r0 + rows_per_chunk);
  float acc = 0.f;
  if (col < N)
    for (int r = r0 + threadIdx.y; r < r1; r += 8) acc += to_f32(dy[size_t(r) * N + col]);
  s[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < N) {
    float t = 0.f;
    for (int j = 0; j < 8; ++j) t += s[j][threadIdx.x];
    scratch[size_t(blockIdx.y) * N + col] = t;
  }
}
__global__ void bias_grad_final_kernel(const float* scratch, float* db, int N, int chunks) {
  int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= N) return;
  float t = 0.f;
  for (int c = 0; c < chunks; ++c) t += scratch[size_t(c) * N + col];
  db[col] += t;
}
template <typename T>
void bias_grad(const T* dy, float* db, float* scratch, int M, int N, cudaStream_t stream) {
  const int chunks = bias_grad_chunks(M);
  const int rpc = int(ceil_div(size_t(M), size_t(chunks)));
  dim3 grid(ceil_div(size_t(N), 32), chunks), block(32, 8);
  bias_grad_partial_kernel<T><<<grid, block, 0, stream>>>(dy, scratch, M, N, rpc);
  VIT_LAUNCH_CHECK();
  bias_grad_final_kernel<<<ceil_div(size_t(N), 256), 256, 0, stream>>>(scratch, db, N, chunks);
  VIT_LAUNCH_CHECK();
}

// ---- the linear layer ----
template <typename TIn, typename TOut>
void linear_fwd(GemmContext& ctx, const TIn* x, const TIn* w, const TOut* b, TOut* y, int M, int K, int N,
                cudaStream_t stream) {
  // D = y^T (N x M, ld N) = op_T(w as (K x N), ld K) * (x as (K x M), ld K)
  bool fused =
      ctx.matmul(true, false, N, M, K, w, K, x, K, y, N, cuda_dtype<TIn>(), cuda_dtype<TOut>(), 1.f, 0.f, b, stream);
  if (b && !fused) bias_add<TOut>(y, b, M, N, stream);
}
template <typename T>
void linear_residual_fwd(GemmContext& ctx, const T* x, const T* w, const T* b, const T* residual, T* y, int M, int K,
                         int N, cudaStream_t stream) {
  // as linear_fwd, with C = residual (N x M, ld N) and beta = 1
  bool fused = ctx.matmul(true, false, N, M, K, w, K, x, K, y, N, cuda_dtype<T>(), cuda_dtype<T>(), 1.f, 1.f, b, stream,
                          residual);
  if (b && !fused) bias_add<T>(y, b, M, N, stream);
}
template <typename T>
void linear_bwd_dx(GemmContext& ctx, const T* dy, const T* w, T* dx, int M, int K, int N, cudaStream_t stream) {
  // D = dx^T (K x M, ld K) = (w as (K x N), ld K) * (dy as (N x M), ld N)
  ctx.matmul(false, false, K, M, N, w, K, dy, N, dx, K, cuda_dtype<T>(), cuda_dtype<T>(), 1.f, 0.f, nullptr, stream);
}
template <typename T>
void linear_bwd_dw(GemmContext& ctx, const T* x, const T* dy, float* dw, int M, int K, int N, cudaStream_t stream) {
  // D = dw^T (K x N, ld K) += (x as (K x M), ld K) * op_T(dy as (N x M), ld N)
  ctx.matmul(false, true, K, N, M, x, K, dy, N, dw, K, cuda_dtype<T>(), CUDA_R_32F, 1.f, 1.f, nullptr, stream);
}
template <typename T>
void linear_bwd_dw_db(GemmContext& ctx, const T* x, const T* dy, float* dw, float* db, float* scratch, int M, int K,
                      int N, cudaStream_t stream) {
  // dw as linear_bwd_dw, then db from the bias_grad kernel. Not cuBLASLt's BGRADB epilogue:
  // measured on an H200 (VIT_PROFILE=1 in bench_e2e_cuda), the weight-gradient
  // GEMMs with that epilogue took 330 ms of a 413 ms vit_b16 step (b256; K = 50,432 token rows)
  // against 46 ms without it plus the bias_grad kernel: the epilogue rules out the split-K
  // algorithms that a long-K, small-output GEMM needs.
  linear_bwd_dw<T>(ctx, x, dy, dw, M, K, N, stream);
  if (db) bias_grad<T>(dy, db, scratch, M, N, stream);
}
template <typename T>
void linear_bwd(GemmContext& ctx, const T* x, const T* w, const T* dy, T* dx, float* dw, float* db, float* scratch,
                int M, int K, int N, cudaStream_t stream) {
  if (dx) linear_bwd_dx<T>(ctx, dy, w, dx, M, K, N, stream);
  linear_bwd_dw_db<T>(ctx, x, dy, dw, db, scratch, M, K, N, stream);
}

#define VIT_INST(T)                                                                                                  \
  template void bias_add<T>(T*, const T*, int, int, cudaStream_t);                                                   \
  template void bias_grad<T>(const T*, float*, float*, int, int, cudaStream_t);                                      \
  template void linear_fwd<T, T>(GemmContext&, const T*, const T*, const T*, T*, int, int, int, cudaStream_t);       \
  template void linear_residual_fwd<T>(GemmContext&, const T*, const T*, const T*, const T*, T*, int, int, int,      \
                                       cudaStream_t);                                                                \
  template void linear_bwd_dx<T>(GemmContext&, const T*, const T*, T*, int, int, int, cudaStream_t);                 \
  template void linear_bwd_dw<T>(GemmContext&, const T*, const T*, float*, int, int, int, cudaStream_t);             \
  template void linear_bwd_dw_db<T>(GemmContext&, const T*, const T*, float*, float*, float*, int, int, int,         \
                                    cudaStream_t);                                                                   \
  template void linear_bwd<T>(GemmContext&, const T*, const T*, const T*, T*, float*, float*, float*, int, int, int, \
                              cudaStream_t);
VIT_INST(float)
VIT_INST(__nv_bfloat16)
#undef VIT_INST
template void linear_fwd<__nv_bfloat16, float>(GemmContext&, const __nv_bfloat16*, const __nv_bfloat16*, const float*,
                                               float*, int, int, int, cudaStream_t);

}  // namespace vit::cuda
