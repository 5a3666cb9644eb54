// cuBLAS opened at run time (dlopen), so a binary built with CUDA starts where the library is absent
// and reports the CUDA device unusable instead of failing to load. Only the calls the backend makes.
#pragma once

#include <cublas_v2.h>

#include "core/status.h"

namespace tandem::cuda {

struct Cublas {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  // The C symbol's signature (C++ sees an overload set).
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                            cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
};

// The library, opened once for the process (libcublas.so.13 from the loader's path, else from the
// toolkit this binary was built against); the error names what was tried.
Result<const Cublas*> cublas();

}  // namespace tandem::cuda
