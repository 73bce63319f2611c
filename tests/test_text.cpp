// Terminal columns of UTF-8 text (predict's table), against what a terminal shows.
#include <gtest/gtest.h>

#include "engine/util/text.h"

TEST(DisplayWidth, CountsColumnsNotBytes) {
  EXPECT_EQ(vit::display_width("plain"), 5);
  EXPECT_EQ(vit::display_width("Ångström"), 8);                  // 2-byte letters, one column each
  EXPECT_EQ(vit::display_width("细胞"), 4);                      // CJK: two columns each
  EXPECT_EQ(vit::display_width("한글 ｆ"), 7);                   // Hangul, a space, a fullwidth letter
  EXPECT_EQ(vit::display_width("\xF0\x9F\x98\x80"), 2);          // an emoji, 4 bytes
  EXPECT_EQ(vit::display_width("e\xCC\x81"), 1);                 // e + combining acute accent
  EXPECT_EQ(vit::display_width(std::string("a\xFF") + "b"), 3);  // an invalid byte takes a column
  EXPECT_EQ(vit::display_width("\xE7\xBB"), 2);                  // a cut sequence: two invalid bytes
}

TEST(DisplayWidth, PadsToTheColumnsAndNeverCuts) {
  EXPECT_EQ(vit::pad_to_width("细胞", 6), "细胞  ");
  EXPECT_EQ(vit::pad_to_width("Ångström", 10), "Ångström  ");
  EXPECT_EQ(vit::pad_to_width("toolong", 3), "toolong");
}
