# Uses ccache as the compiler launcher when it is installed, with the settings precompiled
# headers need (ccache otherwise refuses to cache translation units that use a PCH).
find_program(CELLFM_CCACHE ccache)
if(CELLFM_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      ${CELLFM_CCACHE})
  set(CMAKE_C_COMPILER_LAUNCHER ${CELLFM_CCACHE})
  message(STATUS "cellfm: ccache ${CELLFM_CCACHE}")
endif()
