# Turns on the CUDA language the way every dape CUDA target needs it. Included by the top-level
# CMakeLists.txt (-DDAPE_CUDA=ON) and by tests/cuda/CMakeLists.txt when that folder is built on its own.
#   - nvcc: CMAKE_CUDA_COMPILER or CUDACXX if given, else nvcc on PATH, else /usr/local/cuda/bin/nvcc.
#   - CMAKE_CUDA_ARCHITECTURES 90 compiles sm_90 machine code plus compute_90 PTX (nvcc
#     --generate-code=arch=compute_90,code=[compute_90,sm_90]): SASS for the H100, PTX that the driver can JIT
#     for newer GPUs. Never "native": it fails where there is no GPU.
#   - the shared cudart (the default static one would be linked twice next to CUDA::cudart), C++20.
if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
  find_program(DAPE_NVCC nvcc PATHS /usr/local/cuda/bin)
  if(DAPE_NVCC)
    set(CMAKE_CUDA_COMPILER ${DAPE_NVCC})
  endif()
endif()
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 90)  # must be set before enable_language
endif()
set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
enable_language(CUDA)
if(CMAKE_VERSION VERSION_LESS 3.26)  # CMake 3.25 knows no nvcc flag for C++20
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
find_package(CUDAToolkit REQUIRED)  # CUDA::cudart, CUDA::cublasLt
