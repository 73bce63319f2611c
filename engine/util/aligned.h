// A std::vector allocator that puts every buffer on a 64-byte boundary (a cache line, one AVX-512
// register). The model's arenas use it so that the float results do not depend on where malloc
// happened to place them: vectorised reductions (Eigen's sums, the GEMM edges) split a buffer into
// an unaligned head and aligned packets, and a different head regroups the additions. With the
// base aligned, the same run gives the same bits in any process, and twice in one process.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

namespace vit {

template <class T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <class U>
  Aligned64(const Aligned64<U>&) {}
  T* allocate(std::size_t n) {
    const std::size_t bytes = (n * sizeof(T) + 63) / 64 * 64;  // aligned_alloc wants a multiple
    void* p = std::aligned_alloc(64, bytes ? bytes : 64);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) { std::free(p); }
  template <class U>
  bool operator==(const Aligned64<U>&) const { return true; }
  template <class U>
  bool operator!=(const Aligned64<U>&) const { return false; }
};

// Float storage of the model arenas (parameters and moments, activations).
using FloatArena = std::vector<float, Aligned64<float>>;

}  // namespace vit
