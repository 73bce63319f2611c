# Script-driven training tests (included by the top-level CMakeLists.txt).
# train_quickstart_smoke: the quick start's commands (docs/training.md) with one
# epoch: vitengine train, then vitengine eval on the test split and through the
# bccd5 label map, checking that every promised file is written.
add_test(NAME train_quickstart_smoke
  COMMAND ${CMAKE_COMMAND} -DBIN=$<TARGET_FILE:vitengine> -DSRC=${CMAKE_SOURCE_DIR}
          -DOUT=${CMAKE_BINARY_DIR}/test-runs/quickstart-smoke
          -P ${CMAKE_SOURCE_DIR}/tests/scripts/train_smoke.cmake)
set_tests_properties(train_quickstart_smoke PROPERTIES LABELS cpu TIMEOUT 600)
