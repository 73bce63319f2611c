// safetensors (https://huggingface.co/docs/safetensors): u64 little-endian header
// length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [b, e]}, ...,
// "__metadata__": {str: str}}, then the data buffer (offsets are relative to it).
// No code and no pickles, which is why it is the preferred interchange format.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "weights/state_dict.h"

namespace vit {

// Validates strictly: header length within the file, valid JSON, every entry's dtype
// (F32, F16, BF16), shape (numel * size == end - begin), offsets inside the buffer, no
// two tensors overlapping, no unused bytes (as the reference implementation requires).
// Values become fp32. `metadata` (optional) receives "__metadata__".
StateDict read_safetensors(const std::string& path, std::map<std::string, std::string>* metadata = nullptr);
StateDict parse_safetensors(const uint8_t* data, size_t n, const std::string& what,
                            std::map<std::string, std::string>* metadata = nullptr);

// Disk dtype of a written file. F32 is exact; BF16/F16 halve the size for shipping.
enum class SafetensorsDtype { F32, F16, BF16 };
SafetensorsDtype parse_safetensors_dtype(const std::string& s);  // "f32"/"F32"/"float32", ...

// Tensors are written in `sd`'s key order; the header is space-padded so that the data
// buffer starts 8-byte aligned (as the reference writer does).
// Written atomically (temp + rename).
void write_safetensors(const std::string& path, const StateDict& sd, SafetensorsDtype dtype = SafetensorsDtype::F32,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace vit
