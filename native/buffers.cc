// Memory handed back to the OS when it is no longer used: receive buffers freed at once,
// and glibc's retained free memory trimmed after bursts of work.
//
// A buffer from Buffer.allocUnsafeSlow is freed only when V8 collects it, and its JS object
// is tiny, so nothing prompts a collection: a server that has handed 60 MiB of batches to
// FAISS kept them resident until some later GC. These buffers are mmap'd and freeBuffer()
// detaches them (every view becomes empty) and unmaps the pages now.
#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>

#include <cstdint>
#include <unordered_map>

#include "common.h"

namespace dfaiss {

namespace {

struct Mapping {
  size_t bytes;
  bool unmapped;
};

// data pointer -> mapping, for freeBuffer; touched on the JS thread only (calls and finalizers).
std::unordered_map<void*, Mapping*>& Live() {
  static auto* live = new std::unordered_map<void*, Mapping*>();
  return *live;
}

void Unmap(void* data, Mapping* m) {
  if (m->unmapped) return;
  m->unmapped = true;
  munmap(data, m->bytes);
  Live().erase(data);
}

// allocBuffer(bytes) -> ArrayBuffer of that many zero bytes (page-aligned).
Napi::Value AllocBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t bytes = ArgInt(info, 0, "bytes");
  if (bytes <= 0) throw Napi::RangeError::New(env, "bytes must be positive");
  void* data = mmap(nullptr, static_cast<size_t>(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) throw Napi::Error::New(env, "out of memory: cannot map a receive buffer");
  auto* m = new Mapping{static_cast<size_t>(bytes), false};
  Live()[data] = m;
  return Napi::ArrayBuffer::New(
      env, data, static_cast<size_t>(bytes),
      [](Napi::Env, void* d, Mapping* mapping) {
        Unmap(d, mapping);
        delete mapping;
      },
      m);
}

// freeBuffer(ab): detaches an ArrayBuffer from allocBuffer and unmaps its memory now.
// Other ArrayBuffers are left alone (returns false).
Napi::Value FreeBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) throw Napi::TypeError::New(env, "buffer must be an ArrayBuffer");
  auto ab = info[0].As<Napi::ArrayBuffer>();
  if (ab.IsDetached()) return Napi::Boolean::New(env, false);
  void* data = ab.Data();
  auto it = Live().find(data);
  if (it == Live().end()) return Napi::Boolean::New(env, false);
  Mapping* m = it->second;
  ab.Detach();
  Unmap(data, m);  // the finalizer, whenever it runs, sees `unmapped` and only deletes m
  return Napi::Boolean::New(env, true);
}

// trimMemory() -> Promise<void>: malloc_trim(0) on a worker thread. glibc keeps what FAISS
// frees (old inverted-list and code vectors after they grew, k-means buffers) in its arenas;
// this hands the free pages back to the OS once a burst of adds or a training is over.
Napi::Value TrimMemory(const Napi::CallbackInfo& info) {
  auto* w = new PromiseWorker(info.Env(), []() { malloc_trim(0); });
  return w->Start();
}

// dropFileCache(fd, offset, length): drops the file's clean page-cache pages in the range
// (posix_fadvise DONTNEED). The write-ahead log calls it after each fdatasync: its records
// are read again only by a restart, and on these VMs a write into freshly allocated page
// cache cost ~10 ms per 5 MB batch, while pages the kernel has just freed are reused warm.
Napi::Value DropFileCache(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(ArgInt(info, 0, "fd"));
  int64_t offset = ArgInt(info, 1, "offset");
  int64_t length = ArgInt(info, 2, "length");
  int rc = posix_fadvise(fd, offset, length, POSIX_FADV_DONTNEED);
  return Napi::Boolean::New(info.Env(), rc == 0);
}

}  // namespace

void InitBuffers(Napi::Env env, Napi::Object exports) {
  exports.Set("allocBuffer", Napi::Function::New<AllocBuffer>(env, "allocBuffer"));
  exports.Set("freeBuffer", Napi::Function::New<FreeBuffer>(env, "freeBuffer"));
  exports.Set("dropFileCache", Napi::Function::New<DropFileCache>(env, "dropFileCache"));
  exports.Set("trimMemory", Napi::Function::New<TrimMemory>(env, "trimMemory"));
}

}  // namespace dfaiss
