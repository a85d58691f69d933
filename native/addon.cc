// Module entry: exports NativeIndex, fp16 conversion, vector checks and thread control.
#include <faiss/Index.h>
#include <faiss/utils/distances.h>
#include <faiss/utils/utils.h>
#include <omp.h>

#include <string>

#include "common.h"

// OpenBLAS's build description, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64".
extern "C" char* openblas_get_config(void);

namespace dfaiss {

std::atomic<int> g_num_threads{0};

void ApplyThreadCount() {
  int n = g_num_threads.load(std::memory_order_relaxed);
  if (n > 0 && omp_get_max_threads() != n) omp_set_num_threads(n);
}

// setNumThreads(n): OpenMP threads used by every later FAISS job, and OpenBLAS's pool
// (FAISS calls sgemm for batches of 20+ queries). n <= 0 restores the default.
Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  int64_t n = ArgInt(info, 0, "n");
  static const int kDefault = omp_get_max_threads();
  int value = n > 0 ? static_cast<int>(n) : kDefault;
  g_num_threads.store(value);
  omp_set_num_threads(value);
  openblas_set_num_threads(value);
  return info.Env().Undefined();
}

// setBlasBlockSizes(queryBs, databaseBs): the blocks FAISS's BLAS distance path (k-means,
// IVF assignment, batched Flat search) computes at a time; 0 keeps a value. Returns the
// values now in force as [queryBs, databaseBs].
Napi::Value SetBlasBlockSizes(const Napi::CallbackInfo& info) {
  int64_t q = ArgInt(info, 0, "queryBs");
  int64_t d = ArgInt(info, 1, "databaseBs");
  if (q > 0) faiss::distance_compute_blas_query_bs = static_cast<int>(q);
  if (d > 0) faiss::distance_compute_blas_database_bs = static_cast<int>(d);
  auto out = Napi::Array::New(info.Env(), 2);
  out.Set(0u, Napi::Number::New(info.Env(), faiss::distance_compute_blas_query_bs));
  out.Set(1u, Napi::Number::New(info.Env(), faiss::distance_compute_blas_database_bs));
  return out;
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  int n = g_num_threads.load();
  return Napi::Number::New(info.Env(), n > 0 ? n : omp_get_max_threads());
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InitNativeIndex(env, exports);
  InitFp16(env, exports);
  InitCrc32c(env, exports);
  InitBuffers(env, exports);
  InitVectors(env, exports);
  exports.Set("setNumThreads", Napi::Function::New<SetNumThreads>(env, "setNumThreads"));
  exports.Set("getNumThreads", Napi::Function::New<GetNumThreads>(env, "getNumThreads"));
  exports.Set("setBlasBlockSizes", Napi::Function::New<SetBlasBlockSizes>(env, "setBlasBlockSizes"));
  exports.Set("faissVersion", Napi::String::New(env, std::to_string(FAISS_VERSION_MAJOR) + "." + std::to_string(FAISS_VERSION_MINOR) + "." + std::to_string(FAISS_VERSION_PATCH)));
  // The level binding.gyp built for (what dfaiss_cpu checked), and what FAISS's own code
  // was compiled with ("OPTIMIZE AVX2 " or "OPTIMIZE GENERIC "): the two must agree.
  exports.Set("simdLevel", Napi::String::New(env, DFAISS_SIMD_LEVEL));
  exports.Set("faissCompileOptions", Napi::String::New(env, faiss::get_compile_options()));
  exports.Set("blas", Napi::String::New(env, openblas_get_config()));
#ifdef FAISS_GPU
  exports.Set("gpuAvailable", Napi::Boolean::New(env, true));
#else
  exports.Set("gpuAvailable", Napi::Boolean::New(env, false));
#endif
  return exports;
}

}  // namespace dfaiss

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return dfaiss::Init(env, exports); }

NODE_API_MODULE(dfaiss_native, InitModule)
