// The two ways FAISS 1.7.3's IVF-PQ scanner sums an 8-bit PQ code's table entries
// (IndexIVFPQ.cpp, IVFPQScannerT::distance_single_code), timed against each other in one
// process, alternating, so that load from other work on a shared machine hits both alike:
//   - gather: the `#ifdef __AVX2__` kernel (_mm256_i32gather_ps, 16 sub-quantizers a step);
//   - scalar: the loop FAISS's generic build uses;
//   - patched: FAISS's kernel with our patch (gathers only for M >= 32, else its own scalar loop).
// Compiled like FAISS's avx2 target:
//   g++ -O3 -mavx2 -mfma -mf16c -mpopcnt bench/native/pq8_kernels.cc -o /tmp/pq8 && /tmp/pq8 [M] [codes] [rounds]
// Prints one JSON line: median ns per code for each kernel and the ratios to scalar.
// Caveat, measured: at M = 8 all three run the same scalar loop, yet differ by 1.1-1.6x, so
// how each is compiled and placed matters as much as gathers do; trust end-to-end runs.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace {

constexpr size_t kSub = 256;

// FAISS's generic loop (PQDecoder8::decode is a byte load).
float Scalar(const float* sim_table, const uint8_t* code, size_t M) {
  const float* tab = sim_table;
  float result = 0;
  for (size_t m = 0; m < M; m++) {
    result += tab[code[m]];
    tab += kSub;
  }
  return result;
}

// FAISS 1.7.3's AVX2 kernel, as in IndexIVFPQ.cpp (leftover loop for M % 16 included).
// MinBlocks = 1 is FAISS's; 2 is our patch (scripts/patches/faiss-1.7.3-ivfpq-gather-m32.patch).
template <size_t MinBlocks>
float GatherT(const float* sim_table, const uint8_t* code, size_t M) {
  float result = 0;
  size_t m = 0;
  const size_t pqM16 = M / 16;
  const float* tab = sim_table;
  if (pqM16 >= MinBlocks) {
    const __m256i ksub = _mm256_set1_epi32(kSub);
    __m256i offsets_0 = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    offsets_0 = _mm256_mullo_epi32(offsets_0, ksub);
    __m256 partialSum = _mm256_setzero_ps();
    for (m = 0; m < pqM16 * 16; m += 16) {
      const __m128i mm1 = _mm_loadu_si128((const __m128i_u*)(code + m));
      {
        const __m256i idx1 = _mm256_cvtepu8_epi32(mm1);
        const __m256i indices = _mm256_add_epi32(idx1, offsets_0);
        partialSum = _mm256_add_ps(partialSum, _mm256_i32gather_ps(tab, indices, sizeof(float)));
        tab += kSub * 8;
      }
      const __m128i mm2 = _mm_unpackhi_epi64(mm1, _mm_setzero_si128());
      {
        const __m256i idx1 = _mm256_cvtepu8_epi32(mm2);
        const __m256i indices = _mm256_add_epi32(idx1, offsets_0);
        partialSum = _mm256_add_ps(partialSum, _mm256_i32gather_ps(tab, indices, sizeof(float)));
        tab += kSub * 8;
      }
    }
    const __m256 h0 = _mm256_hadd_ps(partialSum, partialSum);
    const __m256 h1 = _mm256_hadd_ps(h0, h0);
    const __m128 h4 = _mm_add_ss(_mm256_extractf128_ps(h1, 1), _mm256_castps256_ps128(h1));
    result += _mm_cvtss_f32(h4);
  }
  for (; m < M; m++) {
    result += tab[code[m]];
    tab += kSub;
  }
  return result;
}

float Gather(const float* t, const uint8_t* c, size_t M) { return GatherT<1>(t, c, M); }
float Patched(const float* t, const uint8_t* c, size_t M) { return GatherT<2>(t, c, M); }

// One scan of every code, like scan_list_with_table: distance, then a threshold test.
template <float (*Kernel)(const float*, const uint8_t*, size_t)>
double ScanNs(const std::vector<float>& table, const std::vector<uint8_t>& codes, size_t M, float* sink) {
  const size_t n = codes.size() / M;
  auto t0 = std::chrono::steady_clock::now();
  float best = 1e30f;
  for (size_t i = 0; i < n; i++) best = std::min(best, Kernel(table.data(), codes.data() + i * M, M));
  auto t1 = std::chrono::steady_clock::now();
  *sink += best;
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / n;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const size_t M = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 16;
  const size_t n = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 200000;  // codes per scan (~ nprobe lists)
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 201;
  std::mt19937 rng(1234);
  std::vector<float> table(M * kSub);
  for (auto& x : table) x = std::uniform_real_distribution<float>(0, 1)(rng);
  std::vector<uint8_t> codes(n * M);
  for (auto& c : codes) c = static_cast<uint8_t>(rng());
  float sink = 0;
  if (std::abs(Scalar(table.data(), codes.data(), M) - Gather(table.data(), codes.data(), M)) > 1e-3f) {
    std::fprintf(stderr, "kernels disagree\n");
    return 1;
  }
  std::vector<double> g, s, p;
  for (int r = 0; r < rounds; r++) {  // rotate which goes first
    for (int j = 0; j < 3; j++) {
      switch ((r + j) % 3) {
        case 0: g.push_back(ScanNs<Gather>(table, codes, M, &sink)); break;
        case 1: s.push_back(ScanNs<Scalar>(table, codes, M, &sink)); break;
        default: p.push_back(ScanNs<Patched>(table, codes, M, &sink)); break;
      }
    }
  }
  std::printf("{\"M\": %zu, \"codes\": %zu, \"rounds\": %d, \"gatherNsPerCode\": %.3f, \"scalarNsPerCode\": %.3f, \"patchedNsPerCode\": %.3f, "
              "\"gatherOverScalar\": %.3f, \"patchedOverScalar\": %.3f, \"sink\": %.1f}\n",
              M, n, rounds, Median(g), Median(s), Median(p), Median(g) / Median(s), Median(p) / Median(s), sink);
  return 0;
}
