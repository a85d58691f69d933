// FAISS called directly from C++: the reference side of bench/native/flat-search.ts.
//
// Reads the vectors that flat-search.ts writes (so both sides search identical data),
// builds faiss::index_factory(d, "Flat", METRIC_L2), and times, for each thread count:
//   - batch 1:   sequential single-query searches, k=10 (p50 / p99 / mean, microseconds)
//   - batch 100: repeated 100-query searches, k=10 (QPS)
// plus a fixed-overhead probe: single-query k=1 searches on a tiny index (first
// `tiny` base vectors), one thread. Prints one JSON object on stdout.
//
// Threads are set the way the binding's setOmpNumThreads does it: omp_set_num_threads
// and openblas_set_num_threads (FAISS calls sgemm for batches of 20+ queries).
//
// Build (flat-search.ts does this into a temp dir):
//   g++ -std=c++17 -O3 -fopenmp flat_search.cc /usr/lib/x86_64-linux-gnu/libfaiss.a \
//       -lopenblas -llapack -fopenmp -o flat_search
// Run:
//   OMP_WAIT_POLICY=PASSIVE ./flat_search data.bin [threads=1,2] [single=500] [batch=100] [reps=20] [tiny=1000] [tinyQueries=3000]
// data.bin: uint32 magic 0x31424644 ("DFB1"), d, nb, nq; then nb*d base floats, then nq*d query floats.
#include <faiss/Index.h>
#include <faiss/index_factory.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

extern "C" void openblas_set_num_threads(int);

namespace {

using Clock = std::chrono::steady_clock;
using idx_t = faiss::Index::idx_t;

constexpr uint32_t kMagic = 0x31424644;  // "DFB1" little-endian

struct Data {
  uint32_t d = 0, nb = 0, nq = 0;
  std::vector<float> base, queries;
};

Data ReadData(const char* path) {
  Data data;
  FILE* f = std::fopen(path, "rb");
  if (!f) {
    std::fprintf(stderr, "cannot open %s\n", path);
    std::exit(2);
  }
  uint32_t header[4];
  if (std::fread(header, sizeof(uint32_t), 4, f) != 4 || header[0] != kMagic) {
    std::fprintf(stderr, "%s: not a DFB1 data file\n", path);
    std::exit(2);
  }
  data.d = header[1];
  data.nb = header[2];
  data.nq = header[3];
  data.base.resize(size_t(data.nb) * data.d);
  data.queries.resize(size_t(data.nq) * data.d);
  if (std::fread(data.base.data(), sizeof(float), data.base.size(), f) != data.base.size() ||
      std::fread(data.queries.data(), sizeof(float), data.queries.size(), f) != data.queries.size()) {
    std::fprintf(stderr, "%s: truncated\n", path);
    std::exit(2);
  }
  std::fclose(f);
  return data;
}

void SetThreads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

double Micros(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

// Nearest-rank percentile of an already sorted sample.
double Percentile(const std::vector<double>& sorted, double p) {
  size_t rank = static_cast<size_t>(std::ceil(p * sorted.size()));
  if (rank < 1) rank = 1;
  return sorted[std::min(rank, sorted.size()) - 1];
}

std::string LatencyJson(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  double sum = 0;
  for (double v : us) sum += v;
  std::ostringstream o;
  o.precision(6);
  o << "{\"queries\":" << us.size() << ",\"p50_us\":" << Percentile(us, 0.50)
    << ",\"p99_us\":" << Percentile(us, 0.99) << ",\"mean_us\":" << sum / us.size()
    << ",\"min_us\":" << us.front() << "}";
  return o.str();
}

// Sequential single-query searches (query i uses vector i % nq), after `warmup` untimed ones.
std::vector<double> SingleQueries(faiss::Index& index, const Data& data, int count, int k, int warmup) {
  std::vector<float> dist(k);
  std::vector<idx_t> labels(k);
  std::vector<double> us;
  us.reserve(count);
  for (int i = -warmup; i < count; i++) {
    const float* q = data.queries.data() + size_t((i + warmup) % data.nq) * data.d;
    auto t0 = Clock::now();
    index.search(1, q, k, dist.data(), labels.data());
    auto t1 = Clock::now();
    if (i >= 0) us.push_back(Micros(t0, t1));
  }
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s data.bin [threads=1,2] [single=500] [batch=100] [reps=20] [tiny=1000] [tinyQueries=3000]\n", argv[0]);
    return 2;
  }
  std::vector<int> threads;
  {
    std::stringstream ss(argc > 2 ? argv[2] : "1,2");
    std::string item;
    while (std::getline(ss, item, ',')) threads.push_back(std::atoi(item.c_str()));
  }
  const int single = argc > 3 ? std::atoi(argv[3]) : 500;
  const int batch = argc > 4 ? std::atoi(argv[4]) : 100;
  const int reps = argc > 5 ? std::atoi(argv[5]) : 20;
  const int tiny = argc > 6 ? std::atoi(argv[6]) : 1000;
  const int tinyQueries = argc > 7 ? std::atoi(argv[7]) : 3000;
  const int k = 10;

  Data data = ReadData(argv[1]);
  if (data.nq < uint32_t(batch)) {
    std::fprintf(stderr, "need at least %d queries in the data file\n", batch);
    return 2;
  }

  std::unique_ptr<faiss::Index> index(faiss::index_factory(int(data.d), "Flat", faiss::METRIC_L2));
  auto tb0 = Clock::now();
  index->add(data.nb, data.base.data());
  double buildMs = Micros(tb0, Clock::now()) / 1000;

  std::ostringstream out;
  out.precision(6);
  out << "{\"side\":\"cpp\",\"faiss\":\"" << FAISS_VERSION_MAJOR << "." << FAISS_VERSION_MINOR << "."
      << FAISS_VERSION_PATCH << "\",\"d\":" << data.d << ",\"nb\":" << data.nb << ",\"k\":" << k
      << ",\"omp_wait_policy\":\"" << (std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "")
      << "\",\"build_ms\":" << buildMs << ",\"results\":[";

  std::vector<float> dist(size_t(batch) * k);
  std::vector<idx_t> labels(size_t(batch) * k);
  for (size_t t = 0; t < threads.size(); t++) {
    SetThreads(threads[t]);
    std::vector<double> us = SingleQueries(*index, data, single, k, 20);

    // Batch: rep r searches queries [(r*batch) % nq, +batch), wrapping to 0 when short.
    auto batchQueries = [&](int r) {
      size_t start = size_t(r) * batch % data.nq;
      if (start + batch > data.nq) start = 0;
      return data.queries.data() + start * data.d;
    };
    for (int w = 0; w < 2; w++) index->search(batch, batchQueries(w), k, dist.data(), labels.data());
    // Checksum of the first batch's labels, for the cross-check with the binding side.
    index->search(batch, batchQueries(0), k, dist.data(), labels.data());
    int64_t checksum = 0;
    for (size_t i = 0; i < labels.size(); i++) checksum += labels[i] * int64_t(i % k + 1);
    double totalUs = 0;
    for (int r = 0; r < reps; r++) {
      const float* q = batchQueries(r);
      auto t0 = Clock::now();
      index->search(batch, q, k, dist.data(), labels.data());
      totalUs += Micros(t0, Clock::now());
    }
    out << (t ? "," : "") << "{\"threads\":" << threads[t] << ",\"batch1\":" << LatencyJson(us)
        << ",\"batch" << batch << "\":{\"reps\":" << reps << ",\"batch\":" << batch
        << ",\"qps\":" << (double(reps) * batch) / (totalUs / 1e6) << ",\"mean_ms\":" << totalUs / reps / 1000
        << ",\"label_checksum\":" << checksum << "}}";
  }
  out << "]";

  // Fixed-overhead probe: k=1 single queries on a tiny index, one thread.
  {
    SetThreads(1);
    std::unique_ptr<faiss::Index> small(faiss::index_factory(int(data.d), "Flat", faiss::METRIC_L2));
    small->add(std::min<idx_t>(tiny, data.nb), data.base.data());
    std::vector<double> us = SingleQueries(*small, data, tinyQueries, 1, 200);
    out << ",\"tiny\":{\"nb\":" << small->ntotal << ",\"k\":1,\"threads\":1,\"latency\":" << LatencyJson(us) << "}";
  }
  out << "}";
  std::printf("%s\n", out.str().c_str());
  return 0;
}
