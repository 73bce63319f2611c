// Attention rollout against a hand-computed example (engine/eval/rollout.h).
//
// 2 layers, 3 tokens (token 0 = class token), 2 heads:
//   layer 1: head 0 = I;  head 1 = [[0,.5,.5],[.5,.5,0],[0,0,1]]
//            mean = [[.5,.25,.25],[.25,.75,0],[0,0,1]]
//            A1 = .5*mean + .5*I = [[.75,.125,.125],[.125,.875,0],[0,0,1]]   (rows sum to 1)
//   layer 2: head 0 = [[0,1,0],[0,1,0],[0,0,1]];  head 1 = [[0,1,0],[1,0,0],[0,0,1]]
//            mean = [[0,1,0],[.5,.5,0],[0,0,1]]
//            A2 = [[.5,.5,0],[.25,.75,0],[0,0,1]]
//   R = A2 * A1:
//     row 0 = .5*A1[0] + .5*A1[1]   = [.4375, .5, .0625]
//     row 1 = .25*A1[0] + .75*A1[1] = [.28125, .6875, .03125]
//     row 2 = [0, 0, 1]
//   class-token rollout over the patches = [.5, .0625].
// The wrong order (A1 * A2) would give row 0 = [.40625, .46875, .125], so the test
// also pins the order of the product.
#include <gtest/gtest.h>

#include <vector>

#include "engine/eval/rollout.h"

namespace {

struct Example {
  // (H=2, N=3, N=3) per layer
  std::vector<float> l1 = {1, 0,   0,   0,   1,   0, 0, 0, 1,  //
                           0, .5f, .5f, .5f, .5f, 0, 0, 0, 1};
  std::vector<float> l2 = {0, 1, 0, 0, 1, 0, 0, 0, 1,  //
                           0, 1, 0, 1, 0, 0, 0, 0, 1};
  std::vector<const float*> layers() const { return {l1.data(), l2.data()}; }
};

// Every value above is a short binary fraction: exact in float, so 1e-6 only absorbs
// the double -> float rounding of the result.
constexpr float kTol = 1e-6f;

TEST(Rollout, FullMatrixMatchesHandComputed) {
  Example ex;
  std::vector<float> R = vit::attention_rollout(ex.layers(), 2, 3);
  const std::vector<float> want = {.4375f, .5f, .0625f, .28125f, .6875f, .03125f, 0, 0, 1};
  ASSERT_EQ(R.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(R[i], want[i], kTol) << "element " << i;
}

TEST(Rollout, ClassRowMatchesHandComputed) {
  Example ex;
  std::vector<float> r = vit::cls_rollout(ex.layers(), 2, 3);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_NEAR(r[0], .5f, kTol);
  EXPECT_NEAR(r[1], .0625f, kTol);
}

TEST(Rollout, SingleLayerIsResidualMean) {
  Example ex;
  std::vector<float> r = vit::cls_rollout({ex.l1.data()}, 2, 3);
  EXPECT_NEAR(r[0], .125f, kTol);  // A1[0][1]
  EXPECT_NEAR(r[1], .125f, kTol);  // A1[0][2]
}

TEST(Rollout, RowsAreRenormalised) {
  // One head whose rows sum to 2 (not a softmax): A = .5*P + .5*I has rows summing to
  // 1.5 and must be divided by it. P = [[0,2],[0,2]] -> A row 0 = [.5, 1] / 1.5 = [1/3, 2/3].
  std::vector<float> P = {0, 2, 0, 2};
  std::vector<float> R = vit::attention_rollout({P.data()}, 1, 2);
  EXPECT_NEAR(R[0], 1.0f / 3, 1e-6f);
  EXPECT_NEAR(R[1], 2.0f / 3, 1e-6f);
}

TEST(ClsAttention, HeadAndMean) {
  Example ex;
  std::vector<float> h1 = vit::cls_attention(ex.l1.data(), 2, 3, 1);
  EXPECT_NEAR(h1[0], .5f, kTol);
  EXPECT_NEAR(h1[1], .5f, kTol);
  std::vector<float> m = vit::cls_attention(ex.l1.data(), 2, 3, -1);
  EXPECT_NEAR(m[0], .25f, kTol);
  EXPECT_NEAR(m[1], .25f, kTol);
  EXPECT_THROW(vit::cls_attention(ex.l1.data(), 2, 3, 2), std::invalid_argument);
}

TEST(Rollout, RejectsEmpty) { EXPECT_THROW(vit::cls_rollout({}, 1, 3), std::invalid_argument); }

}  // namespace
