# Finds every dependency cellfm builds against and defines the CUDA/NCCL options.
# All come from Debian bookworm packages (cluster/install-deps.sh); GPU machines use the LibTorch
# and NCCL of a PyTorch installation. Machines whose MPI/HDF5 compiler wrappers were relocated
# (see shared/gpu/README.md) set the CELLFM_MPI_* / CELLFM_HDF5_* cache variables, which default
# to the environment variables of the same names that shared/gpu/unpack-debs.sh exports.

# ---- LibTorch --------------------------------------------------------------------------------
find_package(Torch REQUIRED)
if(NOT Torch_VERSION AND DEFINED TORCH_VERSION)
  set(Torch_VERSION ${TORCH_VERSION})
endif()

# ---- MPI -------------------------------------------------------------------------------------
set(CELLFM_MPI_INCLUDE "$ENV{CELLFM_MPI_INCLUDE}" CACHE PATH
    "MPI include directory; set it when the mpicc wrapper cannot be used")
set(CELLFM_MPI_LIBS "$ENV{CELLFM_MPI_LIBS}" CACHE STRING
    "MPI libraries (;-separated); set together with CELLFM_MPI_INCLUDE")
if(CELLFM_MPI_INCLUDE AND CELLFM_MPI_LIBS)
  add_library(MPI::MPI_C INTERFACE IMPORTED)
  set_target_properties(MPI::MPI_C PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${CELLFM_MPI_INCLUDE}"
    INTERFACE_LINK_LIBRARIES "${CELLFM_MPI_LIBS}")
  find_program(MPIEXEC_EXECUTABLE NAMES mpiexec mpirun REQUIRED)
  set(MPIEXEC_NUMPROC_FLAG "-n")
  message(STATUS "cellfm: MPI from CELLFM_MPI_INCLUDE/CELLFM_MPI_LIBS (${CELLFM_MPI_INCLUDE})")
else()
  find_package(MPI REQUIRED COMPONENTS C)
endif()

# ---- parallel HDF5 ---------------------------------------------------------------------------
set(CELLFM_HDF5_INCLUDE "$ENV{CELLFM_HDF5_INCLUDE}" CACHE PATH
    "Parallel HDF5 include directory; set it when the h5pcc wrapper cannot be used")
set(CELLFM_HDF5_LIB "$ENV{CELLFM_HDF5_LIB}" CACHE FILEPATH
    "Parallel HDF5 C library; set together with CELLFM_HDF5_INCLUDE")
if(NOT (CELLFM_HDF5_INCLUDE AND CELLFM_HDF5_LIB))
  set(HDF5_PREFER_PARALLEL ON)
  find_package(HDF5 REQUIRED COMPONENTS C)
  if(NOT HDF5_IS_PARALLEL)
    message(FATAL_ERROR
      "cellfm needs the parallel (MPI) build of HDF5, but the HDF5 found (${HDF5_C_INCLUDE_DIRS}) is "
      "the serial build. On Debian install libhdf5-openmpi-dev (cluster/install-deps.sh does), or "
      "point CELLFM_HDF5_INCLUDE and CELLFM_HDF5_LIB at a parallel build.")
  endif()
  list(GET HDF5_C_INCLUDE_DIRS 0 CELLFM_HDF5_INCLUDE)
  set(CELLFM_HDF5_LIB "${HDF5_C_LIBRARIES}")
endif()
find_file(CELLFM_H5PUBCONF H5pubconf.h PATHS ${CELLFM_HDF5_INCLUDE} NO_DEFAULT_PATH)
if(NOT CELLFM_H5PUBCONF)
  message(FATAL_ERROR "cellfm: no H5pubconf.h in ${CELLFM_HDF5_INCLUDE}; is it an HDF5 include directory?")
endif()
file(STRINGS "${CELLFM_H5PUBCONF}" _cellfm_h5_parallel REGEX "^#define H5_HAVE_PARALLEL 1")
if(NOT _cellfm_h5_parallel)
  message(FATAL_ERROR
    "cellfm needs the parallel (MPI) build of HDF5, but ${CELLFM_H5PUBCONF} does not define "
    "H5_HAVE_PARALLEL. On Debian install libhdf5-openmpi-dev.")
endif()
file(STRINGS "${CELLFM_H5PUBCONF}" _cellfm_h5_version REGEX "^#define H5_VERSION ")
string(REGEX REPLACE ".*\"(.*)\".*" "\\1" CELLFM_HDF5_VERSION "${_cellfm_h5_version}")
add_library(cellfm_hdf5 INTERFACE IMPORTED)
set_target_properties(cellfm_hdf5 PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "${CELLFM_HDF5_INCLUDE}"
  INTERFACE_LINK_LIBRARIES "${CELLFM_HDF5_LIB};MPI::MPI_C")

# ---- the rest --------------------------------------------------------------------------------
find_package(yaml-cpp REQUIRED)
find_package(Boost REQUIRED COMPONENTS program_options)
find_package(libdeflate REQUIRED)
find_package(Threads REQUIRED)
find_package(nlohmann_json REQUIRED)
# SHA-256 of checkpoint files (core/sha256.cpp): libcrypto's SHA-NI/AVX2 code (libssl-dev).
find_package(OpenSSL REQUIRED COMPONENTS Crypto)
if(CELLFM_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

# ---- CUDA and NCCL (GPU builds only) ---------------------------------------------------------
set(_cellfm_torch_has_cuda OFF)
if(TORCH_LIBRARIES MATCHES "cuda" OR TARGET torch_cuda OR CUDA_FOUND)
  set(_cellfm_torch_has_cuda ON)
endif()
option(CELLFM_WITH_CUDA "Build the CUDA paths (needs a LibTorch with CUDA)" ${_cellfm_torch_has_cuda})
if(CELLFM_WITH_CUDA AND NOT _cellfm_torch_has_cuda)
  message(FATAL_ERROR "CELLFM_WITH_CUDA=ON but the LibTorch found (${Torch_DIR}) has no CUDA support")
endif()

set(NCCL_ROOT "$ENV{CELLFM_NCCL_ROOT}" CACHE PATH "NCCL installation (include/nccl.h, lib/libnccl.so*)")
find_path(CELLFM_NCCL_INCLUDE nccl.h HINTS ${NCCL_ROOT} PATH_SUFFIXES include)
find_library(CELLFM_NCCL_LIB NAMES nccl libnccl.so.2 HINTS ${NCCL_ROOT} PATH_SUFFIXES lib lib64)
set(_cellfm_nccl_default OFF)
if(CELLFM_WITH_CUDA AND CELLFM_NCCL_INCLUDE AND CELLFM_NCCL_LIB)
  set(_cellfm_nccl_default ON)
endif()
option(CELLFM_WITH_NCCL "Build the NCCL communicator backend" ${_cellfm_nccl_default})
if(CELLFM_WITH_NCCL)
  if(NOT CELLFM_WITH_CUDA)
    message(FATAL_ERROR "CELLFM_WITH_NCCL=ON needs CELLFM_WITH_CUDA=ON")
  endif()
  if(NOT (CELLFM_NCCL_INCLUDE AND CELLFM_NCCL_LIB))
    message(FATAL_ERROR "CELLFM_WITH_NCCL=ON but nccl.h / libnccl were not found; set NCCL_ROOT")
  endif()
  add_library(cellfm_nccl INTERFACE IMPORTED)
  set_target_properties(cellfm_nccl PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${CELLFM_NCCL_INCLUDE}"
    INTERFACE_LINK_LIBRARIES "${CELLFM_NCCL_LIB}")
endif()
