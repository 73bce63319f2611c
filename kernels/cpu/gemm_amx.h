// The AMX tile kernel behind linear_rows_bf16 (kernels/cpu/infer.h), kept in its own file because
// only that file is compiled with the AMX instruction flags. Callers check amx_bf16_available().
#pragma once
#include <cstdint>

namespace vit::cpu::amx {

// y (M, N) = x (M, K) @ w^T, or += when accumulate; wp is w packed by pack_bf16. K % 32 == 0,
// N % 16 == 0; xs holds round_up(M, 16) * K bf16 values of scratch. One thread.
void matmul_bf16(const float* x, const uint16_t* wp, float* y, int M, int K, int N, bool accumulate, uint16_t* xs);

}  // namespace vit::cpu::amx
