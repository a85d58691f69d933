// Shared helpers for the dfaiss native addon: promise-returning async work and
// typed-array access. Kept deliberately small: validation lives in TypeScript.
#pragma once

#include <napi.h>

#include <atomic>
#include <functional>
#include <string>
#include <vector>

// OpenBLAS's pool size is process-wide (FAISS uses sgemm for batched distances).
extern "C" void openblas_set_num_threads(int);

namespace dfaiss {

// OpenMP's thread count is a per-thread setting, so a value set on the main
// thread would never reach libuv's worker threads. Every job applies it itself.
extern std::atomic<int> g_num_threads;
void ApplyThreadCount();

// Runs `exec` on a libuv worker thread and settles a Promise with `done(env)`.
// Objects passed to Keep() (the caller's typed arrays) stay referenced until the
// job ends, so their memory can be used in place, without copies.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using ExecFn = std::function<void()>;
  using DoneFn = std::function<Napi::Value(Napi::Env)>;

  PromiseWorker(Napi::Env env, ExecFn exec, DoneFn done = nullptr)
      : Napi::AsyncWorker(env, "dfaiss:faiss"),
        deferred_(Napi::Promise::Deferred::New(env)),
        exec_(std::move(exec)),
        done_(std::move(done)) {}

  void Keep(const Napi::Value& v) {
    if (v.IsObject()) refs_.emplace_back(Napi::Persistent(v.As<Napi::Object>()));
  }

  // Queues the job and returns its promise.
  Napi::Promise Start() {
    Napi::Promise p = deferred_.Promise();
    Queue();
    return p;
  }

 protected:
  void Execute() override {
    try {
      ApplyThreadCount();
      exec_();
    } catch (const std::bad_alloc&) {
      SetError("out of memory in FAISS operation");
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("unknown native error in FAISS operation");
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      deferred_.Resolve(done_ ? done_(env) : env.Undefined());
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  ExecFn exec_;
  DoneFn done_;
  std::vector<Napi::ObjectReference> refs_;
};

// Typed-array argument access with a clear TypeError when the JS side passed
// something else (the TypeScript wrapper checks first; this is the safety net).
template <typename T>
inline Napi::TypedArrayOf<T> ArgArray(const Napi::CallbackInfo& info, size_t i,
                                      napi_typedarray_type type, const char* name) {
  if (info.Length() <= i || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != type) {
    throw Napi::TypeError::New(info.Env(), std::string("argument '") + name + "' has the wrong type");
  }
  return info[i].As<Napi::TypedArrayOf<T>>();
}

inline int64_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string("argument '") + name + "' must be a number");
  }
  return info[i].As<Napi::Number>().Int64Value();
}

inline std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsString()) {
    throw Napi::TypeError::New(info.Env(), std::string("argument '") + name + "' must be a string");
  }
  return info[i].As<Napi::String>().Utf8Value();
}

Napi::Object InitNativeIndex(Napi::Env env, Napi::Object exports);
Napi::Object InitFp16(Napi::Env env, Napi::Object exports);
Napi::Object InitCrc32c(Napi::Env env, Napi::Object exports);
void InitBuffers(Napi::Env env, Napi::Object exports);
void InitVectors(Napi::Env env, Napi::Object exports);

}  // namespace dfaiss
