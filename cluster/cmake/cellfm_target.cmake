# Settings every cellfm target shares: warnings as errors on our code, the include root, the
# sanitizers of the asan preset, and one precompiled LibTorch header reused by all targets.

set(CELLFM_WARNINGS -Wall -Wextra -Werror -Wno-error=deprecated-declarations)
# GCC's -Wmaybe-uninitialized misfires on LibTorch's headers once the sanitizers instrument them
# (c10::optional<Tensor> in NormalizeFuncOptions): a warning there, not an error.
set(CELLFM_SANITIZER_FLAGS -fsanitize=address,undefined -fno-omit-frame-pointer
                           -fno-sanitize-recover=undefined -Wno-error=maybe-uninitialized)

# The first target given to cellfm_apply_defaults builds the PCH; the rest reuse it.
set_property(GLOBAL PROPERTY CELLFM_PCH_OWNER "")

function(cellfm_apply_defaults target)
  target_compile_options(${target} PRIVATE ${CELLFM_WARNINGS})
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
  # We use MPI's C API; keep Open MPI's/MPICH's deprecated C++ bindings out of every unit.
  target_compile_definitions(${target} PRIVATE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
  if(CELLFM_SANITIZE)
    target_compile_options(${target} PRIVATE ${CELLFM_SANITIZER_FLAGS})
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
  if(CELLFM_WITH_CUDA)
    target_compile_definitions(${target} PRIVATE CELLFM_WITH_CUDA=1)
  endif()
  if(CELLFM_WITH_NCCL)
    target_compile_definitions(${target} PRIVATE CELLFM_WITH_NCCL=1)
  endif()
  # __FILE__ in error messages reads as a project-relative path ("data/h5_file.cpp").
  target_compile_options(${target} PRIVATE -fmacro-prefix-map=${PROJECT_SOURCE_DIR}/=)
  if(CELLFM_USE_PCH)
    get_property(owner GLOBAL PROPERTY CELLFM_PCH_OWNER)
    if(owner STREQUAL "")
      target_precompile_headers(${target} PRIVATE <torch/torch.h>)
      set_property(GLOBAL PROPERTY CELLFM_PCH_OWNER ${target})
    else()
      target_precompile_headers(${target} REUSE_FROM ${owner})
    endif()
  endif()
endfunction()
