# cmake -DBIN=vitengine -DSRC=repo -DOUT=dir -P train_smoke.cmake
file(REMOVE_RECURSE ${OUT})
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()
run(${BIN} train --config ${SRC}/configs/quickstart.json --data ${SRC}/tests/fixtures/quickstart
    --out ${OUT}/run --set epochs=1)
run(${BIN} eval --model ${OUT}/run/best.vit --data ${SRC}/tests/fixtures/quickstart --split test --out ${OUT}/eval)
foreach(f run/config.json run/last.vit run/best.vit run/metrics.csv run/steps.csv run/loss.svg run/accuracy.svg
        run/summary.md run/report/confusion_counts.svg run/report/confusion_normalized.svg run/report/per_class.svg
        run/report/reliability.svg eval/metrics.json eval/summary.md eval/confusion_counts.svg
        eval/confusion_normalized.svg eval/per_class.svg eval/reliability.svg)
  if(NOT EXISTS ${OUT}/${f})
    message(FATAL_ERROR "missing ${OUT}/${f}")
  endif()
endforeach()
file(READ ${OUT}/eval/metrics.json j)
foreach(k accuracy macro_f1 balanced_accuracy per_class confusion group9 ece per_source hard_classes)
  string(JSON v ERROR_VARIABLE e GET "${j}" ${k})
  if(e)
    message(FATAL_ERROR "metrics.json lacks '${k}'")
  endif()
endforeach()
string(JSON n GET "${j}" n)
if(NOT n EQUAL 70)
  message(FATAL_ERROR "eval saw ${n} test images, expected 70")
endif()
# a second train into the same folder without --resume must be refused (exit 1)
execute_process(COMMAND ${BIN} train --config ${SRC}/configs/quickstart.json --data ${SRC}/tests/fixtures/quickstart
                --out ${OUT}/run --set epochs=1 RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
if(NOT rc EQUAL 1)
  message(FATAL_ERROR "retraining over an existing run returned ${rc}, expected 1: ${err}")
endif()
# a bad config value exits 2 with the field named
execute_process(COMMAND ${BIN} train --data ${SRC}/tests/fixtures/quickstart --out ${OUT}/bad --set lr=-1
                RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
if(NOT rc EQUAL 2 OR NOT err MATCHES "'lr'")
  message(FATAL_ERROR "--set lr=-1 returned ${rc} (expected 2) with: ${err}")
endif()
message(STATUS "quick-start smoke test passed")
