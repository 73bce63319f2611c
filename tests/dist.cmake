# The collectives of engine/dist under mpirun -np 2 (tests/dist_collectives.cpp); only with MPI.
# The training and evaluation checks under mpirun are GoogleTests (tests/test_dist.cpp).
if(VITENGINE_MPI AND MPIEXEC_EXECUTABLE)
  add_executable(dist_collectives dist_collectives.cpp)
  target_link_libraries(dist_collectives PRIVATE vit_dist)
  # its own Open MPI session folder: mpiruns started together (ctest -j2) race for the shared one
  add_test(NAME dist_collectives COMMAND ${MPIEXEC_EXECUTABLE} -np 2 --oversubscribe --allow-run-as-root
           --mca orte_tmpdir_base ${CMAKE_CURRENT_BINARY_DIR} $<TARGET_FILE:dist_collectives>)
  set_tests_properties(dist_collectives PROPERTIES LABELS cpu TIMEOUT 60 PASS_REGULAR_EXPRESSION "2 ranks agree")
endif()
