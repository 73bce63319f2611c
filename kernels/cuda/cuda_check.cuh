// One checking macro for CUDA, cuBLAS and cuDNN: names the statement, file and line.
// VIT_CHECK throws (library code); VIT_CHECK_NOTHROW prints (destructors).
// VIT_LAUNCH_CHECK() after every kernel launch catches bad launch configurations.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <stdexcept>
#include <string>

namespace vit::cuda {

inline const char* status_string(cudaError_t e) { return cudaGetErrorString(e); }
inline const char* status_string(cublasStatus_t s) { return cublasGetStatusString(s); }
inline bool status_ok(cudaError_t e) { return e == cudaSuccess; }
inline bool status_ok(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS; }

struct CudaError : std::runtime_error {
  explicit CudaError(const std::string& w) : std::runtime_error(w) {}
};

template <typename S>
inline void check(S status, const char* stmt, const char* file, int line) {
  if (!status_ok(status))
    throw CudaError(std::string(stmt) + " failed: " + status_string(status) + " at " + file + ":" +
                    std::to_string(line));
}
template <typename S>
inline void check_print(S status, const char* stmt, const char* file, int line) {
  if (!status_ok(status)) std::fprintf(stderr, "%s failed: %s at %s:%d\n", stmt, status_string(status), file, line);
}

}  // namespace vit::cuda

#define VIT_CHECK(x) ::vit::cuda::check((x), #x, __FILE__, __LINE__)
#define VIT_CHECK_NOTHROW(x) ::vit::cuda::check_print((x), #x, __FILE__, __LINE__)
#define VIT_LAUNCH_CHECK() ::vit::cuda::check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
