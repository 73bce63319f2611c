// Reader for PyTorch checkpoints written by torch.save (the zip format, PyTorch >= 1.6):
//   <dir>/data.pkl      a pickle of the state dict; tensors appear as persistent ids
//   <dir>/data/<key>    raw little-endian storage bytes, one entry per storage
//   <dir>/version, <dir>/byteorder (optional)
//
// The pickle is interpreted by a small, strict virtual machine that knows only the
// opcodes torch.save emits for state dicts, and only three kinds of callables:
// torch._utils._rebuild_tensor_v2, collections.OrderedDict and torch.<T>Storage
// (the latter only as a persistent-id tag). Nothing in the file is ever executed: a
// GLOBAL names a Python object, and anything outside that list is refused with the
// name, the opcode and its byte offset. See docs/weights.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "weights/state_dict.h"

namespace vit {

// One tensor as the pickle describes it (no data yet).
struct PthTensorRef {
  std::string key;            // state-dict key
  std::string storage_key;    // entry name under <dir>/data/
  std::string dtype;          // float32, float16, bfloat16, float64, int64, ...
  int64_t storage_numel = 0;  // elements in the whole storage
  int64_t offset = 0;         // storage offset, in elements
  std::vector<int64_t> shape, stride;
};

// Runs the strict pickle VM over data.pkl bytes. The top-level object must be a dict of
// tensors, or a dict with a "model" or "state_dict" entry that is one (training-script
// checkpoints). Throws std::runtime_error naming `what`, the fault and its byte offset.
std::vector<PthTensorRef> parse_state_dict_pickle(const uint8_t* p, size_t n, const std::string& what);

// Reads a whole .pth; float16 / bfloat16 tensors are widened to float32, other dtypes
// are refused naming the key. Strided views (a transpose, a slice) are gathered.
StateDict read_pth(const std::string& path);
// Same, from bytes in memory (tests and fuzzing); `what` names the source in errors.
StateDict read_pth_memory(const uint8_t* data, size_t n, const std::string& what);

}  // namespace vit
