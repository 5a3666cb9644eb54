#include "backend/cuda/cublas.h"

#include <dlfcn.h>

#include <string>

namespace tandem::cuda {
namespace {

Result<Cublas> open_cublas() {
  const std::string soname = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);
  const std::string beside = std::string(TANDEM_CUBLAS_DIR) + "/" + soname;
  void* lib = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) lib = dlopen(beside.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib)
    return not_found("cannot open %s (tried the loader's path and %s: %s); install the CUDA toolkit's cuBLAS or "
                     "put its folder on LD_LIBRARY_PATH", soname.c_str(), beside.c_str(), dlerror());
  Cublas c;
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    return fn != nullptr;
  };
  if (!sym(c.create, "cublasCreate_v2") || !sym(c.destroy, "cublasDestroy_v2") ||
      !sym(c.set_stream, "cublasSetStream_v2") || !sym(c.gemm_ex, "cublasGemmEx"))
    return not_found("%s lacks a function Tandem calls (%s): a different cuBLAS major version?", soname.c_str(), dlerror());
  return c;  // the library stays open for the process's lifetime
}

}  // namespace

Result<const Cublas*> cublas() {
  static const Result<Cublas> lib = open_cublas();
  if (!lib) return lib.status();
  return &lib.value();
}

}  // namespace tandem::cuda
