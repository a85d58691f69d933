// NativeIndex: one faiss::Index behind a readers-writer lock. Searches share
// the lock, everything that mutates the index takes it exclusively, so no
// caller can corrupt an index by racing. Every FAISS call runs as async work.
#include <faiss/AutoTune.h>
#include <faiss/IVFlib.h>
#include <faiss/Index.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFastScan.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/clone_index.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/utils/Heap.h>
#include <faiss/utils/distances.h>
#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <typeinfo>
#include <mutex>
#include <shared_mutex>

#include "common.h"
#include "trained_state.h"

namespace dfaiss {

using idx_t = faiss::Index::idx_t;

namespace {

struct Holder {
  std::unique_ptr<faiss::Index> index;
  std::shared_mutex mu;
  // OpenMP threads for this index's jobs (0: the process-wide setNumThreads). Several
  // servers (ranks) can share one process, each with its own thread count.
  std::atomic<int> threads{0};
};

// Sets the calling thread's OpenMP thread count for a job on `h` (OpenMP's count is per thread).
void ApplyHolderThreads(const Holder& h) {
  int n = h.threads.load(std::memory_order_relaxed);
  if (n > 0 && omp_get_max_threads() != n) omp_set_num_threads(n);
}

// Returns the whole pages of [p, p + bytes) to the kernel; the range stays mapped.
void ReleaseTail(uint8_t* p, size_t bytes) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  uintptr_t from = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  uintptr_t to = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(page - 1);
  if (to > from) madvise(reinterpret_cast<void*>(from), to - from, MADV_DONTNEED);
}

// A flat index's codes live in one std::vector that libstdc++ grows by doubling: every
// growth copies all codes into fresh pages, so a growing Flat shard first-touches about twice
// its size (page faults were the largest cost of a Flat add, bench/results/ingest-profile.md).
// Growing 4x at a time leaves a third as much to copy; the untouched capacity is only
// address space (the kernel backs a page when it is first written). No floor: under strict
// overcommit reserved capacity counts against the commit limit, and small indexes are many.
void ReserveFlatCodes(faiss::Index* idx, idx_t n) {
  auto* flat = dynamic_cast<faiss::IndexFlatCodes*>(idx);
  if (!flat || n <= 0) return;
  size_t need = static_cast<size_t>(flat->ntotal + n) * flat->code_size;
  size_t cap = flat->codes.capacity();
  if (need <= cap) return;
  flat->codes.reserve(std::max(need, cap * 4));
}

// Reads an index straight from caller memory (VectorIOReader would copy it first).
struct SpanReader : faiss::IOReader {
  const uint8_t* data;
  size_t size;
  size_t pos = 0;
  SpanReader(const uint8_t* d, size_t n) : data(d), size(n) { name = "<buffer>"; }
  size_t operator()(void* ptr, size_t item, size_t nitems) override {
    if (item == 0 || nitems == 0) return 0;
    size_t avail = (size - pos) / item;
    size_t n = nitems < avail ? nitems : avail;
    std::memcpy(ptr, data + pos, n * item);
    pos += n * item;
    return n;
  }
};

struct AddonData {
  Napi::FunctionReference ctor;
};

}  // namespace

// Sorts the n rows of x (d floats each) into lexicographic order, in place: a permutation
// sorted by row contents (ties by position), then applied cycle by cycle through one spare
// row, so a sample of GiBs needs no second copy.
static void SortRowsInPlace(float* x, idx_t n, int d) {
  std::vector<idx_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  const size_t dd = static_cast<size_t>(d);
  std::sort(perm.begin(), perm.end(), [x, dd](idx_t a, idx_t b) {
    const float* pa = x + static_cast<size_t>(a) * dd;
    const float* pb = x + static_cast<size_t>(b) * dd;
    for (size_t j = 0; j < dd; j++) {
      if (pa[j] < pb[j]) return true;
      if (pb[j] < pa[j]) return false;
    }
    return a < b;
  });
  std::vector<float> spare(dd);
  std::vector<bool> placed(static_cast<size_t>(n), false);
  const size_t bytes = dd * sizeof(float);
  for (idx_t i = 0; i < n; i++) {
    if (placed[i] || perm[i] == i) continue;
    // Row i receives row perm[i], which receives row perm[perm[i]], ... until the cycle closes.
    std::memcpy(spare.data(), x + static_cast<size_t>(i) * dd, bytes);
    idx_t j = i;
    for (;;) {
      placed[j] = true;
      idx_t k = perm[j];
      if (k == i) {
        std::memcpy(x + static_cast<size_t>(j) * dd, spare.data(), bytes);
        break;
      }
      std::memcpy(x + static_cast<size_t>(j) * dd, x + static_cast<size_t>(k) * dd, bytes);
      j = k;
    }
  }
}

// Rows of an n-row training set that FAISS's training of `idx` reads. An IVF's k-means
// trains on at most nlist * cp.max_points_per_centroid rows and an IVF-PQ's product
// quantizer on at most pq.cp.max_points_per_centroid * ksub, each on a random subsample
// copy of its own (for 100k x 768 into IVF256,PQ64: two 192 MiB copies beside the sample).
// Only these two exact types are capped: other stages (SQ, refinement, transforms) read
// every row.
static idx_t RowsFaissTrainsOn(faiss::Index* idx, idx_t n) {
  auto* ivf = dynamic_cast<faiss::IndexIVF*>(idx);
  if (!ivf || ivf->quantizer_trains_alone != 0 || (ivf->quantizer->is_trained && ivf->quantizer->ntotal == static_cast<idx_t>(ivf->nlist))) return n;
  idx_t cap = static_cast<idx_t>(ivf->nlist) * ivf->cp.max_points_per_centroid;
  if (typeid(*ivf) == typeid(faiss::IndexIVFPQ)) {
    const auto* pq = static_cast<faiss::IndexIVFPQ*>(ivf);
    cap = std::max<idx_t>(cap, static_cast<idx_t>(pq->pq.cp.max_points_per_centroid) * static_cast<idx_t>(pq->pq.ksub));
  } else if (typeid(*ivf) != typeid(faiss::IndexIVFFlat)) {
    return n;
  }
  return std::min(n, cap);
}

// Moves a seeded random `keep` of the n rows of x to its front, in place (a partial
// Fisher-Yates over rows through one spare row): FAISS then trains on those rows without
// subsampling copies. The same rows in (sorted) give the same subset out.
static void SubsampleRowsInPlace(float* x, idx_t n, int d, idx_t keep) {
  const size_t dd = static_cast<size_t>(d);
  const size_t bytes = dd * sizeof(float);
  std::vector<float> spare(dd);
  std::mt19937_64 rng(0x5eed);
  for (idx_t i = 0; i < keep; i++) {
    idx_t j = i + static_cast<idx_t>(rng() % static_cast<uint64_t>(n - i));
    if (j == i) continue;
    float* a = x + static_cast<size_t>(i) * dd;
    float* b = x + static_cast<size_t>(j) * dd;
    std::memcpy(spare.data(), a, bytes);
    std::memcpy(a, b, bytes);
    std::memcpy(b, spare.data(), bytes);
  }
}

class NativeIndex : public Napi::ObjectWrap<NativeIndex> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "NativeIndex",
        {
            StaticMethod<&NativeIndex::FromFactory>("fromFactory"),
            StaticMethod<&NativeIndex::ReadFile>("readFile"),
            StaticMethod<&NativeIndex::ReadBuffer>("readBuffer"),
            InstanceMethod<&NativeIndex::Dim>("dim"),
            InstanceMethod<&NativeIndex::Ntotal>("ntotal"),
            InstanceMethod<&NativeIndex::MetricType>("metricType"),
            InstanceMethod<&NativeIndex::IsTrained>("isTrained"),
            InstanceMethod<&NativeIndex::Nlist>("nlist"),
            InstanceMethod<&NativeIndex::Nprobe>("nprobe"),
            InstanceMethod<&NativeIndex::QuantizerDim>("quantizerDim"),
            InstanceMethod<&NativeIndex::Train>("train"),
            InstanceMethod<&NativeIndex::Add>("add"),
            InstanceMethod<&NativeIndex::AddWithIds>("addWithIds"),
            InstanceMethod<&NativeIndex::Search>("search"),
            InstanceMethod<&NativeIndex::SearchSync>("searchSync"),
            InstanceMethod<&NativeIndex::SearchAndReconstruct>("searchAndReconstruct"),
            InstanceMethod<&NativeIndex::SelectorKindJs>("selectorKind"),
            InstanceMethod<&NativeIndex::SearchSelected>("searchSelected"),
            InstanceMethod<&NativeIndex::SearchSubset>("searchSubset"),
            InstanceMethod<&NativeIndex::Reconstruct>("reconstruct"),
            InstanceMethod<&NativeIndex::RemoveIds>("removeIds"),
            InstanceMethod<&NativeIndex::SetParameter>("setParameter"),
            InstanceMethod<&NativeIndex::Centroids>("centroids"),
            InstanceMethod<&NativeIndex::TrainedLayout>("trainedLayout"),
            InstanceMethod<&NativeIndex::TakesSearchParams>("takesSearchParams"),
            InstanceMethod<&NativeIndex::ExportTrained>("exportTrained"),
            InstanceMethod<&NativeIndex::InstallTrainedState>("installTrainedState"),
            InstanceMethod<&NativeIndex::IsIvf>("isIvf"),
            InstanceMethod<&NativeIndex::Assign>("assign"),
            InstanceMethod<&NativeIndex::Preassignable>("preassignable"),
            InstanceMethod<&NativeIndex::Quantize>("quantize"),
            InstanceMethod<&NativeIndex::SearchPreassigned>("searchPreassigned"),
            InstanceMethod<&NativeIndex::ReserveLists>("reserveLists"),
            InstanceMethod<&NativeIndex::AddPreassigned>("addPreassigned"),
            InstanceMethod<&NativeIndex::Reset>("reset"),
            InstanceMethod<&NativeIndex::Clone>("clone"),
            InstanceMethod<&NativeIndex::SetThreads>("setThreads"),
            InstanceMethod<&NativeIndex::WriteFile>("writeFile"),
            InstanceMethod<&NativeIndex::WriteBuffer>("writeBuffer"),
            InstanceMethod<&NativeIndex::RangeSearch>("rangeSearch"),
            StaticMethod<&NativeIndex::NormalizeL2>("normalizeL2"),
        });
  }

  explicit NativeIndex(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeIndex>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      throw Napi::TypeError::New(info.Env(), "NativeIndex cannot be constructed directly; use fromFactory/readFile/readBuffer");
    }
    holder_ = *info[0].As<Napi::External<std::shared_ptr<Holder>>>().Data();
  }

 private:
  std::shared_ptr<Holder> holder_;

  static Napi::Object Wrap(Napi::Env env, std::unique_ptr<faiss::Index> index) {
    auto holder = std::make_shared<Holder>();
    holder->index = std::move(index);
    Napi::External<std::shared_ptr<Holder>> ext = Napi::External<std::shared_ptr<Holder>>::New(
        env, new std::shared_ptr<Holder>(holder), [](Napi::Env, std::shared_ptr<Holder>* p) { delete p; });
    return env.GetInstanceData<AddonData>()->ctor.New({ext});
  }

  // Promise-returning job that takes the index lock (shared or exclusive) on the worker thread.
  template <typename Fn>
  PromiseWorker* Job(Napi::Env env, bool exclusive, Fn fn, PromiseWorker::DoneFn done = nullptr) {
    std::shared_ptr<Holder> h = holder_;
    return new PromiseWorker(
        env,
        [h, exclusive, fn]() {
          ApplyHolderThreads(*h);
          if (exclusive) {
            std::unique_lock<std::shared_mutex> lock(h->mu);
            fn(h->index.get());
          } else {
            std::shared_lock<std::shared_mutex> lock(h->mu);
            fn(h->index.get());
          }
        },
        std::move(done));
  }

  // fromFactory(dim, description, metric) -> NativeIndex   (metric: 0 = inner product, 1 = L2)
  static Napi::Value FromFactory(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int64_t d = ArgInt(info, 0, "dim");
    std::string desc = ArgString(info, 1, "description");
    int64_t metric = ArgInt(info, 2, "metric");
    if (d <= 0) throw Napi::RangeError::New(env, "dim must be positive");
    try {
      std::unique_ptr<faiss::Index> idx(
          faiss::index_factory(static_cast<int>(d), desc.c_str(), static_cast<faiss::MetricType>(metric)));
      return Wrap(env, std::move(idx));
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
  }

  static Napi::Value ReadFile(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = ArgString(info, 0, "path");
    auto out = std::make_shared<std::unique_ptr<faiss::Index>>();
    auto* w = new PromiseWorker(
        env, [path, out]() { out->reset(faiss::read_index(path.c_str(), 0)); },
        [out](Napi::Env env) -> Napi::Value { return Wrap(env, std::move(*out)); });
    return w->Start();
  }

  static Napi::Value ReadBuffer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto buf = ArgArray<uint8_t>(info, 0, napi_uint8_array, "buffer");
    const uint8_t* data = buf.Data();
    size_t size = buf.ByteLength();
    auto out = std::make_shared<std::unique_ptr<faiss::Index>>();
    auto* w = new PromiseWorker(
        env,
        [data, size, out]() {
          SpanReader r(data, size);
          out->reset(faiss::read_index(&r, 0));
        },
        [out](Napi::Env env) -> Napi::Value { return Wrap(env, std::move(*out)); });
    w->Keep(buf);
    return w->Start();
  }

  // Cheap reads; a concurrent add may be changing ntotal, which is fine for a count.
  Napi::Value Dim(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), holder_->index->d); }
  Napi::Value Ntotal(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(holder_->index->ntotal));
  }
  Napi::Value MetricType(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<int>(holder_->index->metric_type));
  }
  Napi::Value IsTrained(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), holder_->index->is_trained);
  }
  Napi::Value Nlist(const Napi::CallbackInfo& info) {
    const faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(holder_->index.get());
    return Napi::Number::New(info.Env(), ivf ? static_cast<double>(ivf->nlist) : -1.0);
  }

  // Inverted lists probed per query, or -1 when the index is not IVF.
  Napi::Value Nprobe(const Napi::CallbackInfo& info) {
    const faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(holder_->index.get());
    return Napi::Number::New(info.Env(), ivf ? static_cast<double>(ivf->nprobe) : -1.0);
  }

  // Dimension the IVF quantizer works in (smaller than dim after PCA), or -1.
  Napi::Value QuantizerDim(const Napi::CallbackInfo& info) {
    const faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(holder_->index.get());
    return Napi::Number::New(info.Env(), ivf ? static_cast<double>(ivf->quantizer->d) : -1.0);
  }

  // train(x: Float32Array, n, threads = 0, sortRows = false)
  // threads > 0 overrides the process-wide count for this job only: shared training runs
  // one k-means while the other servers on the machine wait for its result, so it may use
  // every core. BLAS's pool is process-wide, hence restored afterwards.
  // sortRows reorders x in place (lexicographically) first, on the worker thread: FAISS's
  // k-means picks its initial centroids by position, so without it the trained state depends
  // on the order shards and clients delivered the same rows. Rows FAISS would subsample
  // away are dropped first, in place, too (RowsFaissTrainsOn): x comes back reordered.
  Napi::Value Train(const Napi::CallbackInfo& info) {
    auto x = ArgArray<float>(info, 0, napi_float32_array, "x");
    idx_t n = ArgInt(info, 1, "n");
    int threads = info.Length() > 2 && !info[2].IsUndefined() ? static_cast<int>(ArgInt(info, 2, "threads")) : 0;
    bool sortRows = info.Length() > 3 && info[3].IsBoolean() && info[3].As<Napi::Boolean>().Value();
    float* px = x.Data();
    auto* w = Job(info.Env(), true, [n, px, threads, sortRows](faiss::Index* idx) {
      if (sortRows) SortRowsInPlace(px, n, idx->d);
      // The subsample FAISS would take, taken here in place: no copies of it (see RowsFaissTrainsOn).
      idx_t used = RowsFaissTrainsOn(idx, n);
      if (used < n) SubsampleRowsInPlace(px, n, idx->d, used);
      if (threads <= 0) {
        idx->train(used, px);
        return;
      }
      int before = g_num_threads.load();
      omp_set_num_threads(threads);
      openblas_set_num_threads(threads);
      try {
        idx->train(used, px);
      } catch (...) {
        openblas_set_num_threads(before > 0 ? before : threads);
        throw;
      }
      openblas_set_num_threads(before > 0 ? before : threads);
    });
    w->Keep(x);
    return w->Start();
  }

  // add(x: Float32Array, n)
  Napi::Value Add(const Napi::CallbackInfo& info) {
    auto x = ArgArray<float>(info, 0, napi_float32_array, "x");
    idx_t n = ArgInt(info, 1, "n");
    const float* px = x.Data();
    auto* w = Job(info.Env(), true, [n, px](faiss::Index* idx) {
      // IDMap refuses add(): give it the ids plain indexes would assign (ntotal, ntotal+1, ...),
      // so "IDMap,Flat" and friends work where callers rely on those ids.
      if (auto* idmap = dynamic_cast<faiss::IndexIDMap*>(idx)) {
        std::vector<idx_t> ids(static_cast<size_t>(n));
        std::iota(ids.begin(), ids.end(), idx->ntotal);
        idmap->add_with_ids(n, px, ids.data());
      } else {
        ReserveFlatCodes(idx, n);
        idx->add(n, px);
      }
    });
    w->Keep(x);
    return w->Start();
  }

  // An exclusive job over (x: Float32Array, n, extra: BigInt64Array(n)): the arguments of
  // addWithIds (extra = ids) and addPreassigned (extra = inverted lists).
  template <typename Fn>
  Napi::Value VectorsAndI64Job(const Napi::CallbackInfo& info, const char* extraName, Fn fn) {
    auto x = ArgArray<float>(info, 0, napi_float32_array, "x");
    idx_t n = ArgInt(info, 1, "n");
    auto extra = ArgArray<int64_t>(info, 2, napi_bigint64_array, extraName);
    const float* px = x.Data();
    const idx_t* pe = extra.Data();
    auto* w = Job(info.Env(), true, [n, px, pe, fn](faiss::Index* idx) { fn(idx, n, px, pe); });
    w->Keep(x);
    w->Keep(extra);
    return w->Start();
  }

  // addWithIds(x: Float32Array, n, ids: BigInt64Array)
  Napi::Value AddWithIds(const Napi::CallbackInfo& info) {
    return VectorsAndI64Job(info, "ids", [](faiss::Index* idx, idx_t n, const float* px, const idx_t* pi) { idx->add_with_ids(n, px, pi); });
  }

  // The leading arguments of every search: (x, n, k, distances: Float32Array(n*k), labels: BigInt64Array(n*k)).
  struct SearchArgs {
    Napi::TypedArrayOf<float> x;
    idx_t n;
    idx_t k;
    Napi::TypedArrayOf<float> dist;
    Napi::TypedArrayOf<int64_t> labels;
  };

  // The raw pointers a search job captures, and the arrays it keeps alive until it ends.
  struct SearchPtrs {
    const float* x;
    float* dist;
    idx_t* labels;
    idx_t n, k;
  };

  static SearchPtrs Ptrs(SearchArgs& a) { return {a.x.Data(), a.dist.Data(), a.labels.Data(), a.n, a.k}; }

  static void KeepSearchArgs(PromiseWorker* w, const SearchArgs& a) {
    w->Keep(a.x);
    w->Keep(a.dist);
    w->Keep(a.labels);
  }

  static SearchArgs ParseSearchArgs(const Napi::CallbackInfo& info) {
    return {ArgArray<float>(info, 0, napi_float32_array, "x"), ArgInt(info, 1, "n"), ArgInt(info, 2, "k"),
            ArgArray<float>(info, 3, napi_float32_array, "distances"),
            ArgArray<int64_t>(info, 4, napi_bigint64_array, "labels")};
  }

  // Per-call search parameters ({nprobe?, maxCodes?, efSearch?} at argument `i`): they go to
  // FAISS as SearchParameters for this call only, so the index's own settings (shared by
  // every client) never change. Validated in TypeScript (config/search-params.ts) first.
  struct CallParams {
    int64_t nprobe = -1, maxCodes = -1, efSearch = -1;
    bool any() const { return nprobe >= 0 || maxCodes >= 0 || efSearch >= 0; }
  };

  static CallParams ParseCallParams(const Napi::CallbackInfo& info, size_t i) {
    CallParams p;
    if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return p;
    if (!info[i].IsObject()) throw Napi::TypeError::New(info.Env(), "argument 'params' must be an object");
    Napi::Object o = info[i].As<Napi::Object>();
    auto get = [&](const char* name, int64_t& out) {
      Napi::Value v = o.Get(name);
      if (v.IsUndefined()) return;
      if (!v.IsNumber() || v.As<Napi::Number>().DoubleValue() < 0) throw Napi::TypeError::New(info.Env(), std::string("params.") + name + " must be a non-negative number");
      out = v.As<Napi::Number>().Int64Value();
    };
    get("nprobe", p.nprobe);
    get("maxCodes", p.maxCodes);
    get("efSearch", p.efSearch);
    return p;
  }

  // The HNSW index of `idx` (directly or under a PreTransform), or null.
  static faiss::IndexHNSW* HnswOf(faiss::Index* idx) {
    if (auto* pt = dynamic_cast<faiss::IndexPreTransform*>(idx)) idx = pt->index;
    return dynamic_cast<faiss::IndexHNSW*>(idx);
  }

  // FAISS 1.7.3's fast-scan IVF (and IDMap wrappers) refuse SearchParameters, and its HNSW
  // accepts SearchParametersHNSW but searches with the index's own efSearch (measured: recall
  // did not move from efSearch 16 to 4096). For those, a per-call nprobe / efSearch is set on
  // the index for the one search, under the exclusive lock (so no other search sees it), and
  // restored after.
  static bool TakesParams(faiss::Index* idx) {
    if (dynamic_cast<faiss::IndexIDMap*>(idx)) return false;
    if (HnswOf(idx)) return false;
    faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(idx);
    return !(ivf && dynamic_cast<faiss::IndexIVFFastScan*>(ivf));
  }

  // The HNSW coarse quantizer of an IVF index, or null.
  static faiss::IndexHNSW* HnswQuantizerOf(faiss::Index* idx) {
    faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(idx);
    return ivf ? dynamic_cast<faiss::IndexHNSW*>(ivf->quantizer) : nullptr;
  }

  // Whether the call's parameters must be set on the index itself, under the exclusive lock:
  // indexes that ignore SearchParameters (TakesParams), and an HNSW coarse quantizer's
  // efSearch, which 1.7.3's IndexHNSW ignores inside SearchParametersIVF::quantizer_params too.
  static bool NeedsOverride(faiss::Index* idx, const CallParams& p) {
    if (!p.any()) return false;
    if (!TakesParams(idx)) return true;
    return p.efSearch >= 0 && HnswQuantizerOf(idx) != nullptr;
  }

  // takesSearchParams(params?): whether these per-call parameters can travel as FAISS
  // SearchParameters (a shared lock suffices), rather than be set on the index for the call.
  Napi::Value TakesSearchParams(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), !NeedsOverride(holder_->index.get(), ParseCallParams(info, 0)));
  }

  template <typename Fn>
  static void WithOverride(faiss::Index* idx, const CallParams& p, Fn search) {
    if (faiss::IndexHNSW* hnsw = HnswOf(idx)) {
      if (p.nprobe >= 0 || p.maxCodes >= 0) throw std::runtime_error("this index type takes no such search parameters");
      int ef = hnsw->hnsw.efSearch;
      if (p.efSearch >= 0) hnsw->hnsw.efSearch = static_cast<int>(p.efSearch);
      try {
        search();
      } catch (...) {
        hnsw->hnsw.efSearch = ef;
        throw;
      }
      hnsw->hnsw.efSearch = ef;
      return;
    }
    faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(idx);
    faiss::IndexHNSW* qh = HnswQuantizerOf(idx);
    if (!ivf || (p.efSearch >= 0 && !qh)) throw std::runtime_error("this index type takes no such search parameters");
    size_t nprobe = ivf->nprobe, maxCodes = ivf->max_codes;
    int qef = qh ? qh->hnsw.efSearch : 0;
    auto restore = [&] {
      ivf->nprobe = nprobe;
      ivf->max_codes = maxCodes;
      if (qh) qh->hnsw.efSearch = qef;
    };
    if (p.nprobe > 0) ivf->nprobe = static_cast<size_t>(p.nprobe);
    if (p.maxCodes >= 0) ivf->max_codes = static_cast<size_t>(p.maxCodes);
    if (p.efSearch >= 0) qh->hnsw.efSearch = static_cast<int>(p.efSearch);
    try {
      search();
    } catch (...) {
      restore();
      throw;
    }
    restore();
  }

  // The SearchParameters object for `p` on this index (null when none are set); `hold` owns
  // what it points to (IVF parameters may point at HNSW ones for the coarse quantizer).
  static const faiss::SearchParameters* BuildParams(faiss::Index* idx, const CallParams& p, std::vector<std::unique_ptr<faiss::SearchParameters>>& hold) {
    if (!p.any()) return nullptr;
    faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(idx);
    if (ivf) {
      auto sp = std::make_unique<faiss::SearchParametersIVF>();
      sp->nprobe = p.nprobe > 0 ? static_cast<size_t>(p.nprobe) : ivf->nprobe;
      sp->max_codes = p.maxCodes >= 0 ? static_cast<size_t>(p.maxCodes) : ivf->max_codes;
      // An HNSW coarse quantizer's efSearch never gets here: 1.7.3 ignores quantizer_params,
      // so NeedsOverride sends it through WithOverride. Any other IVF has no efSearch.
      if (p.efSearch >= 0) throw std::runtime_error("efSearch applies to HNSW indexes (or an HNSW coarse quantizer)");
      hold.push_back(std::move(sp));
      return hold.back().get();
    }
    faiss::Index* inner = idx;
    if (auto* pt = dynamic_cast<faiss::IndexPreTransform*>(idx)) inner = pt->index;
    if (dynamic_cast<faiss::IndexHNSW*>(inner) && p.nprobe < 0 && p.maxCodes < 0) {
      auto sp = std::make_unique<faiss::SearchParametersHNSW>();
      sp->efSearch = p.efSearch >= 0 ? static_cast<int>(p.efSearch) : dynamic_cast<faiss::IndexHNSW*>(inner)->hnsw.efSearch;
      hold.push_back(std::move(sp));
      return hold.back().get();
    }
    throw std::runtime_error("this index type takes no such search parameters");
  }

  // search(x, n, k, distances, labels)
  Napi::Value Search(const Napi::CallbackInfo& info) {
    SearchArgs a = ParseSearchArgs(info);
    const float* px = a.x.Data();
    float* pd = a.dist.Data();
    idx_t* pl = a.labels.Data();
    idx_t n = a.n, k = a.k;
    CallParams cp = ParseCallParams(info, 5);
    bool override = NeedsOverride(holder_->index.get(), cp);
    auto* w = Job(info.Env(), override, [n, k, px, pd, pl, cp, override](faiss::Index* idx) {
      if (override) return WithOverride(idx, cp, [&] { idx->search(n, px, k, pd, pl); });
      std::vector<std::unique_ptr<faiss::SearchParameters>> hold;
      idx->search(n, px, k, pd, pl, BuildParams(idx, cp, hold));
    });
    w->Keep(a.x);
    w->Keep(a.dist);
    w->Keep(a.labels);
    return w->Start();
  }

  // searchSync(x, n, k, distances, labels) -> bool: the same search on the calling thread,
  // for searches of a few hundred microseconds, where the hop to a worker thread and back
  // (two wake-ups, each waiting for a core on a busy machine) costs more than the search.
  // Returns false, without searching, when a write holds the index (the caller goes async).
  Napi::Value SearchSync(const Napi::CallbackInfo& info) {
    SearchArgs a = ParseSearchArgs(info);
    CallParams cp = ParseCallParams(info, 5);
    if (NeedsOverride(holder_->index.get(), cp)) return Napi::Boolean::New(info.Env(), false);  // needs the exclusive path
    std::shared_lock<std::shared_mutex> lock(holder_->mu, std::try_to_lock);
    if (!lock.owns_lock()) return Napi::Boolean::New(info.Env(), false);
    ApplyThreadCount();
    ApplyHolderThreads(*holder_);
    try {
      std::vector<std::unique_ptr<faiss::SearchParameters>> hold;
      holder_->index->search(a.n, a.x.Data(), a.k, a.dist.Data(), a.labels.Data(), BuildParams(holder_->index.get(), cp, hold));
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
    return Napi::Boolean::New(info.Env(), true);
  }

  // searchAndReconstruct(x, n, k, distances, labels, recons: Float32Array(n*k*d))
  Napi::Value SearchAndReconstruct(const Napi::CallbackInfo& info) {
    SearchArgs a = ParseSearchArgs(info);
    auto recons = ArgArray<float>(info, 5, napi_float32_array, "recons");
    const float* px = a.x.Data();
    float* pd = a.dist.Data();
    idx_t* pl = a.labels.Data();
    float* pr = recons.Data();
    idx_t n = a.n, k = a.k;
    CallParams cp = ParseCallParams(info, 6);
    bool override = NeedsOverride(holder_->index.get(), cp);
    auto* w = Job(info.Env(), override, [n, k, px, pd, pl, pr, cp, override](faiss::Index* idx) {
      if (override) return WithOverride(idx, cp, [&] { idx->search_and_reconstruct(n, px, k, pd, pl, pr); });
      std::vector<std::unique_ptr<faiss::SearchParameters>> hold;
      idx->search_and_reconstruct(n, px, k, pd, pl, pr, BuildParams(idx, cp, hold));
    });
    w->Keep(a.x);
    w->Keep(a.dist);
    w->Keep(a.labels);
    w->Keep(recons);
    return w->Start();
  }

  // ---- filtered search (issue 17) ----

  // How FAISS 1.7.3 honours SearchParameters::sel on this index: "flat" (every vector
  // scanned), "ivf" (the probed lists; not fast scan, which refuses parameters), "hnsw" (the
  // graph walk), at the top level (IDMap and PreTransform do not pass parameters on); ""
  // for other types, which are searched by searchSubset.
  static const char* SelectorKind(faiss::Index* idx) {
    if (dynamic_cast<faiss::IndexFlat*>(idx)) return "flat";
    if (dynamic_cast<faiss::IndexHNSW*>(idx)) return "hnsw";
    auto* ivf = dynamic_cast<faiss::IndexIVF*>(idx);
    return ivf && !dynamic_cast<faiss::IndexIVFFastScan*>(ivf) ? "ivf" : "";
  }

  static bool SelectorWorks(faiss::Index* idx) { return SelectorKind(idx)[0] != '\0'; }

  Napi::Value SelectorKindJs(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), SelectorKind(holder_->index.get()));
  }

  // searchSelected(x, n, k, distances, labels, params, bitmap: Uint8Array): search() where only
  // labels whose bit is set in `bitmap` (IDSelectorBitmap layout) are scored.
  Napi::Value SearchSelected(const Napi::CallbackInfo& info) {
    SearchArgs a = ParseSearchArgs(info);
    CallParams cp = ParseCallParams(info, 5);
    auto bitmap = ArgArray<uint8_t>(info, 6, napi_uint8_array, "bitmap");
    SearchPtrs p = Ptrs(a);
    const uint8_t* pb = bitmap.Data();
    size_t nb = bitmap.ByteLength();
    bool override = NeedsOverride(holder_->index.get(), cp);
    auto* w = Job(info.Env(), override, [p, cp, pb, nb, override](faiss::Index* idx) {
      if (!SelectorWorks(idx)) throw std::runtime_error("this index type cannot search with an id selector; use searchSubset");
      faiss::IDSelectorBitmap sel(nb, pb);
      auto run = [&](const CallParams& use) {
        std::vector<std::unique_ptr<faiss::SearchParameters>> hold;
        faiss::SearchParameters* sp = SelectorParams(idx, use, hold);
        sp->sel = &sel;
        idx->search(p.n, p.x, p.k, p.dist, p.labels, sp);
      };
      if (override) return WithOverride(idx, cp, [&] { run(CallParams{}); });
      run(cp);
    });
    KeepSearchArgs(w, a);
    w->Keep(bitmap);
    return w->Start();
  }

  // The per-call parameters as the SearchParameters subclass the index casts to (its own
  // settings where the call sets none), for the selector to be attached to.
  static faiss::SearchParameters* SelectorParams(faiss::Index* idx, const CallParams& cp, std::vector<std::unique_ptr<faiss::SearchParameters>>& hold) {
    if (const faiss::SearchParameters* built = BuildParams(idx, cp, hold)) return const_cast<faiss::SearchParameters*>(built);
    if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(idx)) {
      auto p = std::make_unique<faiss::SearchParametersIVF>();
      p->nprobe = ivf->nprobe;
      p->max_codes = ivf->max_codes;
      hold.push_back(std::move(p));
    } else if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(idx)) {
      auto p = std::make_unique<faiss::SearchParametersHNSW>();
      p->efSearch = hnsw->hnsw.efSearch;
      hold.push_back(std::move(p));
    } else {
      hold.push_back(std::make_unique<faiss::SearchParameters>());
    }
    return hold.back().get();
  }

  // searchSubset(x, n, k, distances, labels, subset: BigInt64Array): exact k nearest among the
  // given labels only, by their stored (reconstructed) vectors: for a filter that admits few
  // records this beats any index walk. Distances are the index's own (squared L2 or inner
  // product of the stored codes), so they merge with searches of other shards.
  Napi::Value SearchSubset(const Napi::CallbackInfo& info) {
    SearchArgs a = ParseSearchArgs(info);
    auto subset = ArgArray<int64_t>(info, 5, napi_bigint64_array, "subset");
    SearchPtrs p = Ptrs(a);
    const idx_t* ps = subset.Data();
    size_t m = subset.ElementLength();
    std::shared_ptr<Holder> h = holder_;
    auto* w = new PromiseWorker(info.Env(), [h, p, ps, m]() {
      {
        // IVF looks vectors up by label through a direct map, built once (exclusive).
        std::shared_lock<std::shared_mutex> lock(h->mu);
        faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(h->index.get());
        if (!ivf || !ivf->direct_map.no()) return SubsetKnn(h->index.get(), p, ps, m);
      }
      std::unique_lock<std::shared_mutex> lock(h->mu);
      faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(h->index.get());
      if (ivf->direct_map.no()) ivf->set_direct_map_type(faiss::DirectMap::Hashtable);
      SubsetKnn(h->index.get(), p, ps, m);
    });
    KeepSearchArgs(w, a);
    w->Keep(subset);
    return w->Start();
  }

  template <class C>
  static void SubsetKnnWith(faiss::Index* idx, idx_t n, idx_t k, const float* x, float* D, idx_t* I, const idx_t* subset, size_t m) {
    const size_t d = idx->d;
    const bool ip = idx->metric_type == faiss::METRIC_INNER_PRODUCT;
    for (idx_t q = 0; q < n; q++) faiss::heap_heapify<C>(k, D + q * k, I + q * k);
    // Vectors are reconstructed a block at a time (bounded memory for any subset size).
    const size_t block = 4096;
    std::vector<float> y(std::min(block, std::max<size_t>(m, 1)) * d);
    for (size_t b0 = 0; b0 < m; b0 += block) {
      const size_t nb = std::min(block, m - b0);
      for (size_t j = 0; j < nb; j++) idx->reconstruct(subset[b0 + j], y.data() + j * d);
#pragma omp parallel for if (n > 1)
      for (idx_t q = 0; q < n; q++) {
        float* dq = D + q * k;
        idx_t* iq = I + q * k;
        const float* xq = x + q * d;
        for (size_t j = 0; j < nb; j++) {
          const float* yj = y.data() + j * d;
          float dist = ip ? faiss::fvec_inner_product(xq, yj, d) : faiss::fvec_L2sqr(xq, yj, d);
          if (C::cmp(dq[0], dist)) faiss::heap_replace_top<C>(k, dq, iq, dist, subset[b0 + j]);
        }
      }
    }
    for (idx_t q = 0; q < n; q++) faiss::heap_reorder<C>(k, D + q * k, I + q * k);
  }

  static void SubsetKnn(faiss::Index* idx, const SearchPtrs& p, const idx_t* subset, size_t m) {
    if (idx->metric_type == faiss::METRIC_INNER_PRODUCT) {
      SubsetKnnWith<faiss::CMin<float, idx_t>>(idx, p.n, p.k, p.x, p.dist, p.labels, subset, m);
    } else {
      SubsetKnnWith<faiss::CMax<float, idx_t>>(idx, p.n, p.k, p.x, p.dist, p.labels, subset, m);
    }
  }

  // reconstruct(ids: BigInt64Array, out: Float32Array(ids.length*d))
  // IVF indexes need a direct map to look vectors up by id; it is built on first use
  // (hash-table flavour, so remove_ids keeps working), hence the exclusive lock.
  Napi::Value Reconstruct(const Napi::CallbackInfo& info) {
    auto ids = ArgArray<int64_t>(info, 0, napi_bigint64_array, "ids");
    auto out = ArgArray<float>(info, 1, napi_float32_array, "out");
    const idx_t* pi = ids.Data();
    size_t n = ids.ElementLength();
    float* po = out.Data();
    auto* w = Job(info.Env(), true, [pi, n, po](faiss::Index* idx) {
      faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(idx);
      if (ivf && ivf->direct_map.no()) ivf->set_direct_map_type(faiss::DirectMap::Hashtable);
      for (size_t i = 0; i < n; i++) idx->reconstruct(pi[i], po + i * idx->d);
    });
    w->Keep(ids);
    w->Keep(out);
    return w->Start();
  }

  // remove_ids keeps the storage's capacity: after a mass delete a Flat index would hold
  // its old size forever. A Flat index hands the whole pages past its last code back to the
  // kernel (no copy; they read as zeros if growth touches them again: ReserveFlatCodes
  // leaves capacity ahead on purpose). IVF lists at most half used are reallocated to fit
  // (one copy, amortised over the removals that halved them).
  static void ShrinkAfterRemoval(faiss::Index* idx) {
    if (auto* flat = dynamic_cast<faiss::IndexFlatCodes*>(idx)) {
      ReleaseTail(flat->codes.data() + flat->codes.size(), flat->codes.capacity() - flat->codes.size());
      return;
    }
    auto* ivf = dynamic_cast<faiss::IndexIVF*>(idx);
    auto* lists = ivf ? dynamic_cast<faiss::ArrayInvertedLists*>(ivf->invlists) : nullptr;
    if (!lists) return;
    for (size_t l = 0; l < lists->nlist; l++) {
      if (lists->ids[l].size() < lists->ids[l].capacity() / 2) {
        lists->ids[l].shrink_to_fit();
        lists->codes[l].shrink_to_fit();
      }
    }
  }

  // removeIds(ids: BigInt64Array) -> number removed
  Napi::Value RemoveIds(const Napi::CallbackInfo& info) {
    auto ids = ArgArray<int64_t>(info, 0, napi_bigint64_array, "ids");
    const idx_t* pi = ids.Data();
    size_t n = ids.ElementLength();
    auto removed = std::make_shared<size_t>(0);
    auto* w = Job(
        info.Env(), true,
        [pi, n, removed](faiss::Index* idx) {
          // A hash-table direct map (see reconstruct) only accepts IDSelectorArray;
          // elsewhere IDSelectorBatch is faster (hashed membership instead of a scan).
          const faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(idx);
          if (ivf && ivf->direct_map.type == faiss::DirectMap::Hashtable) {
            faiss::IDSelectorArray sel(n, pi);
            *removed = idx->remove_ids(sel);
          } else {
            faiss::IDSelectorBatch sel(n, pi);
            *removed = idx->remove_ids(sel);
          }
          ShrinkAfterRemoval(idx);
        },
        [removed](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, static_cast<double>(*removed)); });
    w->Keep(ids);
    return w->Start();
  }

  // setParameter(name, value) through faiss::ParameterSpace (nprobe, efSearch, k_factor, ...)
  Napi::Value SetParameter(const Napi::CallbackInfo& info) {
    std::string name = ArgString(info, 0, "name");
    if (info.Length() < 2 || !info[1].IsNumber()) throw Napi::TypeError::New(info.Env(), "argument 'value' must be a number");
    double value = info[1].As<Napi::Number>().DoubleValue();
    auto* w = Job(info.Env(), true, [name, value](faiss::Index* idx) {
      faiss::ParameterSpace ps;
      ps.set_index_parameter(idx, name, value);
    });
    return w->Start();
  }

  // centroids(out: Float32Array(nlist*d_quantizer)): the IVF coarse quantizer's vectors
  Napi::Value Centroids(const Napi::CallbackInfo& info) {
    auto out = ArgArray<float>(info, 0, napi_float32_array, "out");
    float* po = out.Data();
    size_t cap = out.ElementLength();
    auto* w = Job(info.Env(), false, [po, cap](faiss::Index* idx) {
      const faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(idx);
      if (!ivf) throw std::runtime_error("index is not an IVF index; it has no centroids");
      if (!ivf->is_trained) throw std::runtime_error("index is not trained yet; it has no centroids");
      if (cap < ivf->nlist * static_cast<size_t>(ivf->quantizer->d)) throw std::runtime_error("centroid output buffer too small");
      ivf->quantizer->reconstruct_n(0, ivf->nlist, po);
    });
    w->Keep(out);
    return w->Start();
  }

  // trainedLayout(): [[name, length], ...] of this index's trained state (see
  // trained_state.h); throws for a type whose training cannot be shared. It reads only the
  // index's structure (sizes fixed at construction), so it takes no lock.
  Napi::Value TrainedLayout(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      auto parts = TrainedParts(holder_->index.get(), nullptr);
      Napi::Array out = Napi::Array::New(env, parts.size());
      for (size_t i = 0; i < parts.size(); i++) {
        Napi::Array pair = Napi::Array::New(env, 2);
        pair.Set(0u, Napi::String::New(env, parts[i].name));
        pair.Set(1u, Napi::Number::New(env, static_cast<double>(parts[i].len)));
        out.Set(static_cast<uint32_t>(i), pair);
      }
      return out;
    } catch (const std::exception& e) {
      Napi::Error::New(env, e.what()).ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }

  // exportTrained(out: Float32Array(sum of lengths)): the trained state, parts back to back.
  Napi::Value ExportTrained(const Napi::CallbackInfo& info) {
    auto out = ArgArray<float>(info, 0, napi_float32_array, "out");
    float* po = out.Data();
    size_t cap = out.ElementLength();
    auto* w = Job(info.Env(), false, [po, cap](faiss::Index* idx) {
      if (!idx->is_trained) throw std::runtime_error("index is not trained yet");
      size_t off = 0;
      for (auto& p : TrainedParts(idx, nullptr)) {
        if (off + p.len > cap) throw std::runtime_error("trained-state output buffer too small");
        p.get(po + off);
        off += p.len;
      }
    });
    w->Keep(out);
    return w->Start();
  }

  // installTrainedState(data: Float32Array): trains an untrained index with another index's
  // exported state; the total length must match this index's own layout exactly.
  Napi::Value InstallTrainedState(const Napi::CallbackInfo& info) {
    auto data = ArgArray<float>(info, 0, napi_float32_array, "state");
    const float* pd = data.Data();
    size_t len = data.ElementLength();
    auto* w = Job(info.Env(), true, [pd, len](faiss::Index* idx) {
      if (idx->is_trained) throw std::runtime_error("index is trained already");
      std::vector<std::function<void()>> after;
      auto parts = TrainedParts(idx, &after);
      size_t want = 0;
      for (auto& p : parts) want += p.len;
      if (len != want) throw std::runtime_error("expected " + std::to_string(want) + " trained-state values, got " + std::to_string(len));
      size_t off = 0;
      for (auto& p : parts) {
        p.set(pd + off);
        off += p.len;
      }
      for (auto& f : after) f();
    });
    w->Keep(data);
    return w->Start();
  }

  // An IVF add split in two, so the expensive half does not hold the index exclusively and
  // the lists can be sized once: assign() runs the coarse quantizer under a shared lock,
  // reserveLists() gives each inverted list its final capacity (vectors grown by repeated
  // appends kept ~80% of slack and freed blocks here), addPreassigned() only appends.
  // Top-level IVF indexes only (isIvf).
  // Only with ArrayInvertedLists: fast-scan indexes pack codes in BlockInvertedLists, whose
  // add_entries refuses appends at an offset (and throws inside FAISS's OpenMP loop, which
  // would end the process); they take the plain add() path.
  Napi::Value IsIvf(const Napi::CallbackInfo& info) {
    auto* ivf = dynamic_cast<const faiss::IndexIVF*>(holder_->index.get());
    return Napi::Boolean::New(info.Env(), ivf != nullptr && dynamic_cast<const faiss::ArrayInvertedLists*>(ivf->invlists) != nullptr);
  }

  static faiss::IndexIVF* TopIvf(faiss::Index* idx, bool arrayLists = false) {
    auto* ivf = dynamic_cast<faiss::IndexIVF*>(idx);
    if (!ivf) throw std::runtime_error("not an IVF index");
    if (!ivf->is_trained) throw std::runtime_error("index is not trained");
    if (arrayLists && !dynamic_cast<faiss::ArrayInvertedLists*>(ivf->invlists)) {
      throw std::runtime_error("this IVF index keeps its lists in blocks (fast scan): add vectors with add()");
    }
    return ivf;
  }

  // assign(x, n, out: BigInt64Array(n)): the inverted list of each vector.
  Napi::Value Assign(const Napi::CallbackInfo& info) {
    auto x = ArgArray<float>(info, 0, napi_float32_array, "x");
    idx_t n = ArgInt(info, 1, "n");
    auto out = ArgArray<int64_t>(info, 2, napi_bigint64_array, "out");
    const float* px = x.Data();
    idx_t* po = out.Data();
    auto* w = Job(info.Env(), false, [n, px, po](faiss::Index* idx) { TopIvf(idx)->quantizer->assign(n, px, po); });
    w->Keep(x);
    w->Keep(out);
    return w->Start();
  }

  // Quantize once for a fan-out search (issue 15): the coarse quantizer's search runs on one
  // server, every shard with the same centroids scans its own lists with the result
  // (IndexIVF::search_preassigned). Only a top-level IVF index with a flat quantizer: a
  // pre-transform would need the transformed queries, an HNSW quantizer is approximate (its
  // answer depends on efSearch), and 1.7.3's fast-scan IVF has no scanner for
  // search_preassigned (it would throw inside an OpenMP region and end the process).
  // Returns the reason it cannot, or "" when it can.
  static std::string PreassignRefusal(const faiss::Index* idx) {
    auto* ivf = dynamic_cast<const faiss::IndexIVF*>(idx);
    if (!ivf) return "not a plain IVF index (no pre-transform or id map)";
    if (dynamic_cast<const faiss::IndexIVFFastScan*>(ivf)) return "fast-scan IVF cannot search preassigned lists in FAISS 1.7.3";
    if (!dynamic_cast<const faiss::IndexIVFFlat*>(ivf) && !dynamic_cast<const faiss::IndexIVFScalarQuantizer*>(ivf) && !dynamic_cast<const faiss::IndexIVFPQ*>(ivf)) {
      return "only IVF-Flat, IVF-SQ and IVF-PQ search preassigned lists";
    }
    if (!dynamic_cast<const faiss::IndexFlat*>(ivf->quantizer)) return "the coarse quantizer is not flat";
    if (!ivf->is_trained) return "index is not trained";
    return "";
  }

  // preassignable() -> "" or why quantize/searchPreassigned do not apply to this index.
  Napi::Value Preassignable(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), PreassignRefusal(holder_->index.get()));
  }

  static faiss::IndexIVF* PreassignIvf(faiss::Index* idx) {
    std::string why = PreassignRefusal(idx);
    if (!why.empty()) throw std::runtime_error(why);
    return static_cast<faiss::IndexIVF*>(idx);
  }

  // quantize(x, n, nprobe, assign: BigInt64Array(n*nprobe), coarse: Float32Array(n*nprobe)):
  // each query's nprobe nearest lists and their coarse distances, as IndexIVF::search finds them.
  Napi::Value Quantize(const Napi::CallbackInfo& info) {
    auto x = ArgArray<float>(info, 0, napi_float32_array, "x");
    idx_t n = ArgInt(info, 1, "n");
    idx_t nprobe = ArgInt(info, 2, "nprobe");
    auto assign = ArgArray<int64_t>(info, 3, napi_bigint64_array, "assign");
    auto coarse = ArgArray<float>(info, 4, napi_float32_array, "coarse");
    if (nprobe < 1 || assign.ElementLength() != static_cast<size_t>(n * nprobe) || coarse.ElementLength() != static_cast<size_t>(n * nprobe)) {
      throw Napi::RangeError::New(info.Env(), "assign and coarse must hold n*nprobe values, nprobe >= 1");
    }
    const float* px = x.Data();
    idx_t* pa = assign.Data();
    float* pc = coarse.Data();
    auto* w = Job(info.Env(), false, [n, nprobe, px, pa, pc](faiss::Index* idx) {
      faiss::IndexIVF* ivf = PreassignIvf(idx);
      if (static_cast<size_t>(nprobe) > ivf->nlist) throw std::runtime_error("nprobe exceeds nlist");
      ivf->quantizer->search(n, px, nprobe, pc, pa);
    });
    w->Keep(x);
    w->Keep(assign);
    w->Keep(coarse);
    return w->Start();
  }

  // searchPreassigned(x, n, k, distances, labels, assign, coarse, nprobe, params, sync) -> Promise,
  // or with sync a bool (false: a write holds the index, nothing searched) as searchSync.
  // assign/coarse are n*nprobe from quantize() on an index with the same centroids; list
  // ids are checked here (-1, an empty slot, is skipped by FAISS) since a bad one would
  // read outside the lists.
  Napi::Value SearchPreassigned(const Napi::CallbackInfo& info) {
    SearchArgs a = ParseSearchArgs(info);
    auto assign = ArgArray<int64_t>(info, 5, napi_bigint64_array, "assign");
    auto coarse = ArgArray<float>(info, 6, napi_float32_array, "coarse");
    idx_t nprobe = ArgInt(info, 7, "nprobe");
    CallParams cp = ParseCallParams(info, 8);
    bool sync = info.Length() > 9 && info[9].ToBoolean().Value();
    if (nprobe < 1 || assign.ElementLength() != static_cast<size_t>(a.n * nprobe) || coarse.ElementLength() != static_cast<size_t>(a.n * nprobe)) {
      throw Napi::RangeError::New(info.Env(), "assign and coarse must hold n*nprobe values, nprobe >= 1");
    }
    const float* px = a.x.Data();
    float* pd = a.dist.Data();
    idx_t* pl = a.labels.Data();
    const idx_t* pa = assign.Data();
    const float* pc = coarse.Data();
    idx_t n = a.n, k = a.k;
    auto run = [n, k, px, pd, pl, pa, pc, nprobe, cp](faiss::Index* idx) {
      faiss::IndexIVF* ivf = PreassignIvf(idx);
      const idx_t nlist = static_cast<idx_t>(ivf->nlist);
      for (idx_t i = 0; i < n * nprobe; i++) {
        if (pa[i] < -1 || pa[i] >= nlist) throw std::runtime_error("assign[" + std::to_string(i) + "] is not a list id in [0, " + std::to_string(nlist) + ")");
      }
      faiss::SearchParametersIVF sp;
      sp.nprobe = static_cast<size_t>(nprobe);
      sp.max_codes = cp.maxCodes >= 0 ? static_cast<size_t>(cp.maxCodes) : ivf->max_codes;
      ivf->search_preassigned(n, px, k, pa, pc, pd, pl, false, &sp);
    };
    if (sync) {
      std::shared_lock<std::shared_mutex> lock(holder_->mu, std::try_to_lock);
      if (!lock.owns_lock()) return Napi::Boolean::New(info.Env(), false);
      ApplyThreadCount();
      try {
        run(holder_->index.get());
      } catch (const std::exception& e) {
        throw Napi::Error::New(info.Env(), e.what());
      }
      return Napi::Boolean::New(info.Env(), true);
    }
    auto* w = Job(info.Env(), false, run);
    w->Keep(a.x);
    w->Keep(a.dist);
    w->Keep(a.labels);
    w->Keep(assign);
    w->Keep(coarse);
    return w->Start();
  }

  // reserveLists(counts: Uint32Array(nlist)): room for counts[l] more entries in list l.
  Napi::Value ReserveLists(const Napi::CallbackInfo& info) {
    auto counts = ArgArray<uint32_t>(info, 0, napi_uint32_array, "counts");
    const uint32_t* pc = counts.Data();
    size_t len = counts.ElementLength();
    auto* w = Job(info.Env(), true, [pc, len](faiss::Index* idx) {
      faiss::IndexIVF* ivf = TopIvf(idx, true);
      if (len != ivf->nlist) throw std::runtime_error("counts must have nlist entries");
      auto* lists = dynamic_cast<faiss::ArrayInvertedLists*>(ivf->invlists);
      if (!lists) return;  // other list storage: nothing to reserve
      for (size_t l = 0; l < len; l++) {
        size_t want = lists->ids[l].size() + pc[l];
        size_t cap = lists->ids[l].capacity();
        if (want <= cap) continue;
        // Exact for the first, large drain; by half again when lists grow a little at a time
        // (an exact reserve per small batch would copy every list on every batch).
        size_t grown = std::max(want, cap + cap / 2);
        lists->ids[l].reserve(grown);
        lists->codes[l].reserve(grown * lists->code_size);
      }
    });
    w->Keep(counts);
    return w->Start();
  }

  // addPreassigned(x, n, assign: BigInt64Array(n)): add() with the lists from assign().
  Napi::Value AddPreassigned(const Napi::CallbackInfo& info) {
    return VectorsAndI64Job(info, "assign", [](faiss::Index* idx, idx_t n, const float* px, const idx_t* pa) {
      faiss::IndexIVF* ivf = TopIvf(idx, true);
      const idx_t nlist = static_cast<idx_t>(ivf->nlist);
      for (idx_t i = 0; i < n; i++) {
        if (pa[i] < 0 || pa[i] >= nlist) throw std::runtime_error("assign holds a list number out of range");
      }
      ivf->add_core(n, px, nullptr, pa);
    });
  }

  Napi::Value Reset(const Napi::CallbackInfo& info) {
    return Job(info.Env(), true, [](faiss::Index* idx) { idx->reset(); })->Start();
  }

  // clone() -> NativeIndex (deep copy, e.g. to ship one trained, empty index to many shards)
  Napi::Value Clone(const Napi::CallbackInfo& info) {
    auto out = std::make_shared<std::unique_ptr<faiss::Index>>();
    int threads = holder_->threads.load();
    auto* w = Job(
        info.Env(), false, [out](faiss::Index* idx) { out->reset(faiss::clone_index(idx)); },
        [out, threads](Napi::Env env) -> Napi::Value {
          Napi::Object clone = Wrap(env, std::move(*out));
          NativeIndex::Unwrap(clone)->holder_->threads.store(threads);  // a clone keeps its owner's threads
          return clone;
        });
    return w->Start();
  }

  // setThreads(n): OpenMP threads for this index's later jobs; 0 = the process-wide count.
  Napi::Value SetThreads(const Napi::CallbackInfo& info) {
    int64_t n = ArgInt(info, 0, "n");
    if (n < 0 || n > 1024) throw Napi::RangeError::New(info.Env(), "threads must be 0..1024");
    holder_->threads.store(static_cast<int>(n));
    return info.Env().Undefined();
  }

  Napi::Value WriteFile(const Napi::CallbackInfo& info) {
    std::string path = ArgString(info, 0, "path");
    return Job(info.Env(), false, [path](faiss::Index* idx) { faiss::write_index(idx, path.c_str()); })->Start();
  }

  // rangeSearch(x, n, radius) -> { lims: Float64Array(n+1), labels: BigInt64Array, distances: Float32Array }
  // (issue 16). Index types without range search (HNSW, ...) make FAISS throw; the message
  // goes back as the rejection.
  Napi::Value RangeSearch(const Napi::CallbackInfo& info) {
    auto x = ArgArray<float>(info, 0, napi_float32_array, "x");
    idx_t n = ArgInt(info, 1, "n");
    if (info.Length() < 3 || !info[2].IsNumber()) throw Napi::TypeError::New(info.Env(), "argument 'radius' must be a number");
    float radius = info[2].As<Napi::Number>().FloatValue();
    const float* px = x.Data();
    auto res = std::make_shared<std::unique_ptr<faiss::RangeSearchResult>>();
    auto* w = Job(
        info.Env(), false,
        [n, px, radius, res](faiss::Index* idx) {
          res->reset(new faiss::RangeSearchResult(n));
          idx->range_search(n, px, radius, res->get());
        },
        [res, n](Napi::Env env) -> Napi::Value {
          faiss::RangeSearchResult* r = res->get();
          size_t total = r->lims[n];
          Napi::Float64Array lims = Napi::Float64Array::New(env, n + 1);
          for (idx_t i = 0; i <= n; i++) lims[i] = static_cast<double>(r->lims[i]);
          Napi::BigInt64Array labels = Napi::BigInt64Array::New(env, total);
          Napi::Float32Array distances = Napi::Float32Array::New(env, total);
          if (total > 0) {
            std::memcpy(labels.Data(), r->labels, total * sizeof(int64_t));
            std::memcpy(distances.Data(), r->distances, total * sizeof(float));
          }
          Napi::Object out = Napi::Object::New(env);
          out.Set("lims", lims);
          out.Set("labels", labels);
          out.Set("distances", distances);
          return out;
        });
    w->Keep(x);
    return w->Start();
  }

  // normalizeL2(x: Float32Array, n, d): scales each row to unit L2 norm in place
  // (faiss::fvec_renorm_L2; all-zero rows stay zero). Synchronous: it is one pass over memory.
  static Napi::Value NormalizeL2(const Napi::CallbackInfo& info) {
    auto x = ArgArray<float>(info, 0, napi_float32_array, "x");
    int64_t n = ArgInt(info, 1, "n");
    int64_t d = ArgInt(info, 2, "d");
    if (n < 0 || d <= 0 || static_cast<size_t>(n * d) > x.ElementLength()) throw Napi::RangeError::New(info.Env(), "n x d exceeds the array");
    faiss::fvec_renorm_L2(static_cast<size_t>(d), static_cast<size_t>(n), x.Data());
    return info.Env().Undefined();
  }

  // writeBuffer() -> Buffer; the serialized bytes are handed to JS without a copy.
  Napi::Value WriteBuffer(const Napi::CallbackInfo& info) {
    auto bytes = std::make_shared<std::vector<uint8_t>>();
    auto* w = Job(
        info.Env(), false,
        [bytes](faiss::Index* idx) {
          faiss::VectorIOWriter writer;
          faiss::write_index(idx, &writer);
          bytes->swap(writer.data);
        },
        [bytes](Napi::Env env) -> Napi::Value {
          auto* owned = new std::vector<uint8_t>(std::move(*bytes));
          return Napi::Buffer<uint8_t>::New(env, owned->data(), owned->size(),
                                            [](Napi::Env, uint8_t*, std::vector<uint8_t>* v) { delete v; }, owned);
        });
    return w->Start();
  }
};

Napi::Object InitNativeIndex(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  Napi::Function ctor = NativeIndex::Define(env);
  data->ctor = Napi::Persistent(ctor);
  env.SetInstanceData<AddonData>(data);
  exports.Set("NativeIndex", ctor);
  return exports;
}

}  // namespace dfaiss
