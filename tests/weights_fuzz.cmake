# Weights-layer test registrations (included at the end of CMakeLists.txt).
#
# 1. vitengine_weights_fuzz_asan: the reader fuzz tests (tests/test_weights_fuzz.cpp)
#    built together with the weights, model and CPU kernel sources under
#    AddressSanitizer + UndefinedBehaviorSanitizer, so that an out-of-bounds read or a
#    leak in a reader fails the test even where the plain build would survive it.
# 2. weights_export_torchvision: tools/check_export_torchvision.py loads `vitengine
#    export` output into torchvision and compares logits; registered only where
#    /usr/bin/python3 exists, and it skips (exit 77) without PyTorch.

if(VITENGINE_ASAN)
  file(GLOB _wfuzz_src CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/weights/*.cpp ${CMAKE_SOURCE_DIR}/kernels/*.cpp)
  add_executable(vitengine_weights_fuzz_asan ${CMAKE_SOURCE_DIR}/tests/test_weights_fuzz.cpp
                 ${CMAKE_SOURCE_DIR}/engine/vit.cpp ${_wfuzz_src})
  target_include_directories(vitengine_weights_fuzz_asan PRIVATE ${CMAKE_SOURCE_DIR})
  # -O1 keeps the sanitizer's reports readable; no -march=native needed here.
  set(_wfuzz_flags -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1 -g)
  target_compile_options(vitengine_weights_fuzz_asan PRIVATE ${_wfuzz_flags})
  target_link_options(vitengine_weights_fuzz_asan PRIVATE -fsanitize=address,undefined)
  target_link_libraries(vitengine_weights_fuzz_asan PRIVATE Eigen3::Eigen OpenMP::OpenMP_CXX Threads::Threads
    nlohmann_json::nlohmann_json PkgConfig::LIBZIP OpenSSL::Crypto GTest::gtest GTest::gtest_main)
  target_compile_definitions(vitengine_weights_fuzz_asan PRIVATE EIGEN_DONT_PARALLELIZE
    VITENGINE_SOURCE_DIR="${CMAKE_SOURCE_DIR}" VITENGINE_TEST_DATA="${CMAKE_SOURCE_DIR}/tests/data"
    VITENGINE_FUZZ_ASAN=1)
  gtest_discover_tests(vitengine_weights_fuzz_asan TEST_PREFIX "asan." PROPERTIES LABELS "cpu" DISCOVERY_TIMEOUT 60)
endif()

if(EXISTS /usr/bin/python3)
  add_test(NAME weights_export_torchvision
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tools/check_export_torchvision.py
      --vitengine $<TARGET_FILE:vitengine> --tests $<TARGET_FILE:vitengine_tests>
      --data ${CMAKE_SOURCE_DIR}/tests/data --workdir ${CMAKE_BINARY_DIR}/export_check)
  set_tests_properties(weights_export_torchvision PROPERTIES LABELS "cpu" SKIP_RETURN_CODE 77 TIMEOUT 120)
endif()
