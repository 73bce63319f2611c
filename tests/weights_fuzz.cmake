# Weights-layer test registrations (included at the end of CMakeLists.txt).
#
# 1. vitengine_weights_fuzz_asan: the reader fuzz tests (tests/test_weights_fuzz.cpp)
#    with the reader sources (weights/*.cpp) under AddressSanitizer +
#    UndefinedBehaviorSanitizer, so that an out-of-bounds read, a use-after-free or a
#    leak in a reader fails the test even where the plain build would survive it.
# 2. weights_export_torchvision: tools/check_export_torchvision.py loads `vitengine
#    export` output into torchvision and compares logits; registered only where
#    /usr/bin/python3 exists, and it skips (exit 77) without PyTorch.

if(VITENGINE_ASAN)
  # Only the readers (weights/*.cpp) and the test are instrumented; the model and the
  # kernels come from the plain vit_model (the weights layer's sources are compiled here
  # instead of linking vit_weights). Instrumenting Eigen-heavy kernels would
  # add minutes of build time on CI's 2 cores and check nothing the readers do.
  file(GLOB _wfuzz_src CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/weights/*.cpp)
  add_executable(vitengine_weights_fuzz_asan ${CMAKE_CURRENT_SOURCE_DIR}/test_weights_fuzz.cpp ${_wfuzz_src})
  # -O1 keeps the sanitizer's reports readable.
  target_compile_options(vitengine_weights_fuzz_asan PRIVATE
    -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1 -g)
  target_link_options(vitengine_weights_fuzz_asan PRIVATE -fsanitize=address,undefined)
  target_link_libraries(vitengine_weights_fuzz_asan PRIVATE vit_model vit_util nlohmann_json::nlohmann_json
    PkgConfig::LIBZIP OpenSSL::Crypto GTest::gtest GTest::gtest_main)
  target_compile_definitions(vitengine_weights_fuzz_asan PRIVATE
    VITENGINE_TEST_DATA="${CMAKE_SOURCE_DIR}/tests/data" VITENGINE_FUZZ_ASAN=1)
  gtest_discover_tests(vitengine_weights_fuzz_asan TEST_PREFIX "asan." PROPERTIES LABELS "cpu" DISCOVERY_TIMEOUT 60)
endif()

if(EXISTS /usr/bin/python3)
  add_test(NAME weights_export_torchvision
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tools/check_export_torchvision.py
      --vitengine $<TARGET_FILE:vitengine> --tests $<TARGET_FILE:test_weights>
      --data ${CMAKE_SOURCE_DIR}/tests/data --workdir ${CMAKE_BINARY_DIR}/export_check)
  set_tests_properties(weights_export_torchvision PROPERTIES LABELS "cpu" SKIP_RETURN_CODE 77 TIMEOUT 120)
endif()
