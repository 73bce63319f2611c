# any_dataset_cli: a folder of anyone's images through prepare, train, eval, predict, export and
# the refusals, with UTF-8 class names; and the digits example's commands (tests/scripts/any_dataset.sh).
add_test(NAME any_dataset_cli
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/scripts/any_dataset.sh $<TARGET_FILE:vitengine> ${CMAKE_SOURCE_DIR}
          ${CMAKE_BINARY_DIR}/test-runs/any-dataset)
set_tests_properties(any_dataset_cli PROPERTIES LABELS cpu TIMEOUT 300)
