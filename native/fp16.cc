// float16 -> float32 conversion for bulk loads, which send fp16 on the wire.
// Uses the CPU's F16C instructions when present (8 values per instruction),
// with a portable bit-manipulation fallback.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "common.h"

namespace dfaiss {

namespace {

inline float HalfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        exp--;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000 | (mant << 13);  // inf / nan
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

void ConvertScalar(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = HalfToFloat(src[i]);
}

__attribute__((target("avx,f16c"))) void ConvertF16C(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  ConvertScalar(src + i, dst + i, n - i);
}

const bool kHasF16C = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");

void Convert(const uint16_t* src, float* dst, size_t n) {
  if (kHasF16C) {
    ConvertF16C(src, dst, n);
  } else {
    ConvertScalar(src, dst, n);
  }
}

void CheckSizes(const Napi::Env& env, const Napi::TypedArrayOf<uint16_t>& src, const Napi::TypedArrayOf<float>& dst) {
  if (dst.ElementLength() < src.ElementLength()) {
    throw Napi::RangeError::New(env, "fp16ToFp32: 'dst' must hold at least src.length floats");
  }
}

// fp16ToFp32(src: Uint16Array, dst: Float32Array): synchronous, for small arrays.
Napi::Value Fp16ToFp32(const Napi::CallbackInfo& info) {
  auto src = ArgArray<uint16_t>(info, 0, napi_uint16_array, "src");
  auto dst = ArgArray<float>(info, 1, napi_float32_array, "dst");
  CheckSizes(info.Env(), src, dst);
  Convert(src.Data(), dst.Data(), src.ElementLength());
  return info.Env().Undefined();
}

// fp16ToFp32Async(src, dst) -> Promise<void>: the same off the event loop, for bulk batches.
Napi::Value Fp16ToFp32Async(const Napi::CallbackInfo& info) {
  auto src = ArgArray<uint16_t>(info, 0, napi_uint16_array, "src");
  auto dst = ArgArray<float>(info, 1, napi_float32_array, "dst");
  CheckSizes(info.Env(), src, dst);
  const uint16_t* ps = src.Data();
  float* pd = dst.Data();
  size_t n = src.ElementLength();
  auto* w = new PromiseWorker(info.Env(), [ps, pd, n]() { Convert(ps, pd, n); });
  w->Keep(src);
  w->Keep(dst);
  return w->Start();
}

}  // namespace

Napi::Object InitFp16(Napi::Env env, Napi::Object exports) {
  exports.Set("fp16ToFp32", Napi::Function::New<Fp16ToFp32>(env, "fp16ToFp32"));
  exports.Set("fp16ToFp32Async", Napi::Function::New<Fp16ToFp32Async>(env, "fp16ToFp32Async"));
  exports.Set("hasF16C", Napi::Boolean::New(env, kHasF16C));
  return exports;
}

}  // namespace dfaiss
