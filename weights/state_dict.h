// Tensors read from foreign weight files (PyTorch .pth, safetensors), keyed by name.
// Whatever the on-disk dtype, values are fp32 in memory: the engine computes in fp32,
// and converting once at load keeps every consumer simple.
#pragma once
#include "engine/util/file.h"
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace vit {

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;            // row-major, numel() values
  std::string src_dtype = "float32";  // what the file held: float32, float16, bfloat16
  size_t numel() const { return data.size(); }
};

// std::map: sorted keys make error messages and exported files deterministic.
using StateDict = std::map<std::string, HostTensor>;

// "(48, 3, 8, 8)", like torch.Size prints.
std::string shape_str(const std::vector<int64_t>& shape);
// Product of dims; throws std::runtime_error naming `what` on a negative dim or a
// product above 2^40 elements (no real ViT comes near; a hostile file would overflow).
int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what);

// IEEE binary16 and bfloat16 <-> float. Narrowing rounds to nearest even; NaN stays NaN.
float half_to_float(uint16_t h);
float bf16_to_float(uint16_t b);
uint16_t float_to_half(float f);
uint16_t float_to_bf16(float f);

// read_file_bytes and write_file_atomic: engine/util/file.h.

}  // namespace vit
