// The comparison every emulator test makes between a kernel's output and its CPU reference:
// finite, and |got - ref| <= atol + rtol |ref|, element by element. Only the first failure is
// reported: a kernel that gets one element wrong usually gets thousands wrong.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tests/emu/cuda_emu.h"

namespace emu {

template <typename T, typename R>
void expect_close(const std::vector<T>& got, const std::vector<R>& ref, double atol, double rtol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = to_double(got[i]), r = double(ref[i]);
    if (!std::isfinite(g) || std::fabs(g - r) > atol + rtol * std::fabs(r)) {
      ADD_FAILURE() << what << "[" << i << "] = " << g << ", reference " << r;
      return;
    }
  }
}

}  // namespace emu
