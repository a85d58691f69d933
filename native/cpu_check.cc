// The CPU check that runs before the main addon is loaded. A separate, tiny module on
// purpose: loading dfaiss_native.node already runs FAISS's static initialisers, which the
// compiler may have vectorised with AVX2, so a check inside it could come too late (SIGILL).
// This file is compiled without any -m flags and uses no FAISS.
#include <napi.h>

#include <string>
#include <vector>

#ifndef DFAISS_SIMD_LEVEL
#error "binding.gyp defines DFAISS_SIMD_LEVEL (the level of the linked FAISS)"
#endif

namespace {

struct Feature {
  const char* name;
  bool present;
};

// What FAISS's build for each level compiles with (-mavx2 -mfma -mf16c -mpopcnt for avx2).
std::vector<Feature> Required(const std::string& level) {
  __builtin_cpu_init();
  std::vector<Feature> f;
  if (level == "avx2" || level == "avx512") {
    f = {{"avx2", __builtin_cpu_supports("avx2") != 0},
         {"fma", __builtin_cpu_supports("fma") != 0},
         {"popcnt", __builtin_cpu_supports("popcnt") != 0},
         {"f16c", __builtin_cpu_supports("f16c") != 0}};
  }
  if (level == "avx512") {
    // __builtin_cpu_supports takes only string literals.
    f.insert(f.end(), {{"avx512f", __builtin_cpu_supports("avx512f") != 0},
                       {"avx512cd", __builtin_cpu_supports("avx512cd") != 0},
                       {"avx512vl", __builtin_cpu_supports("avx512vl") != 0},
                       {"avx512dq", __builtin_cpu_supports("avx512dq") != 0},
                       {"avx512bw", __builtin_cpu_supports("avx512bw") != 0}});
  }
  return f;
}

}  // namespace

// exports: level (what the linked FAISS was built for), required (its instruction sets),
// missing (those this CPU lacks; empty when the main addon is safe to load).
static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  const std::string level = DFAISS_SIMD_LEVEL;
  auto required = Napi::Array::New(env);
  auto missing = Napi::Array::New(env);
  for (const Feature& f : Required(level)) {
    required.Set(required.Length(), f.name);
    if (!f.present) missing.Set(missing.Length(), f.name);
  }
  exports.Set("level", level);
  exports.Set("required", required);
  exports.Set("missing", missing);
  return exports;
}

NODE_API_MODULE(dfaiss_cpu, Init)
