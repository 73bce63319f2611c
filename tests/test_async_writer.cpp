// The trainer's background checkpoint writer: jobs run one at a time and in order, errors come
// back to the caller, and the destructor leaves no job running.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "engine/util/async_writer.h"

using vit::AsyncWriter;

TEST(AsyncWriter, JobsRunInOrderOneAtATime) {
  std::vector<int> order;
  std::atomic<int> running{0};
  int most = 0;
  {
    AsyncWriter w;
    for (int i = 0; i < 5; ++i)
      w.submit([&, i] {
        most = std::max(most, ++running);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        order.push_back(i);
        --running;
      });
    w.wait();
    EXPECT_FALSE(w.busy());
  }
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(most, 1);
}

TEST(AsyncWriter, AJobsErrorReachesTheNextCallOnce) {
  AsyncWriter w;
  w.submit([] { throw std::runtime_error("disk full: /tmp/x.vit"); });
  try {
    w.wait();
    FAIL() << "expected the job's exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("disk full"), std::string::npos);
  }
  EXPECT_NO_THROW(w.wait());  // reported once
  w.submit([] { throw std::runtime_error("second"); });
  EXPECT_THROW(w.submit([] {}), std::runtime_error);  // submit reports the previous job's error
}

TEST(AsyncWriter, DestructorWaitsForTheJob) {
  std::atomic<bool> done{false};
  {
    AsyncWriter w;
    w.submit([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      done = true;
    });
  }
  EXPECT_TRUE(done);
}
