// The trained state of an index as plain float arrays, for shared training: one shard
// trains, every other shard installs the same numbers into an index it built itself from
// its own configuration. Never a serialized FAISS index from the wire (FAISS's reader is
// not meant for untrusted bytes): only arrays whose names and lengths the receiving index
// dictates, copied into the fields training would have filled.
//
// Supported: IndexPreTransform with linear transforms (PCA, OPQ, random rotation, ITQ
// matrices), IVF with a flat coarse quantizer over Flat, SQ or PQ (incl. fast scan) codes,
// HNSW over SQ, and SQ / PQ / Flat at the top. Anything else is not shareable (its layout
// throws), and trains per shard.
#pragma once

#include <faiss/IndexHNSW.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexIVFPQFastScan.h>
#include <faiss/IndexIVFPQR.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/VectorTransform.h>

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace dfaiss {

struct TrainedPart {
  std::string name;
  size_t len;
  std::function<void(float*)> get;        // copies the trained values out
  std::function<void(const float*)> set;  // installs them into an untrained index
};

namespace trained_detail {

// Values a ScalarQuantizer's training produces (ScalarQuantizer::train in 1.7.3).
inline size_t SqTrainedLen(const faiss::ScalarQuantizer& sq) {
  using Q = faiss::ScalarQuantizer;
  switch (sq.qtype) {
    case Q::QT_8bit_uniform:
    case Q::QT_4bit_uniform:
      return 2;
    case Q::QT_8bit:
    case Q::QT_4bit:
    case Q::QT_6bit:
      return 2 * sq.d;
    default:
      return 0;  // fp16, 8bit_direct: nothing to train
  }
}

inline void AddSq(faiss::ScalarQuantizer* sq, const std::string& name, std::vector<TrainedPart>& parts) {
  size_t len = SqTrainedLen(*sq);
  if (len == 0) return;
  parts.push_back({name, len, [sq, len](float* out) {
                     if (sq->trained.size() != len) throw std::runtime_error("scalar quantizer is not trained");
                     std::copy(sq->trained.begin(), sq->trained.end(), out);
                   },
                   [sq, len](const float* in) { sq->trained.assign(in, in + len); }});
}

inline void AddPq(faiss::ProductQuantizer* pq, const std::string& name, std::vector<TrainedPart>& parts) {
  size_t len = pq->M * pq->ksub * pq->dsub;
  parts.push_back({name, len, [pq, len](float* out) {
                     if (pq->centroids.size() != len) throw std::runtime_error("product quantizer is not trained");
                     std::copy(pq->centroids.begin(), pq->centroids.end(), out);
                   },
                   [pq, len](const float* in) { pq->centroids.assign(in, in + len); }});
}

inline void Collect(faiss::Index* idx, const std::string& path, std::vector<TrainedPart>& parts, std::vector<std::function<void()>>& after) {
  if (auto* pt = dynamic_cast<faiss::IndexPreTransform*>(idx)) {
    for (size_t i = 0; i < pt->chain.size(); i++) {
      auto* lt = dynamic_cast<faiss::LinearTransform*>(pt->chain[i]);
      if (!lt) throw std::runtime_error("a pre-transform that is not linear cannot be shared");
      std::string p = path + "transform" + std::to_string(i) + ".";
      size_t alen = static_cast<size_t>(lt->d_out) * lt->d_in;
      parts.push_back({p + "A", alen, [lt, alen](float* out) {
                         if (!lt->is_trained || lt->A.size() != alen) throw std::runtime_error("transform is not trained");
                         std::copy(lt->A.begin(), lt->A.end(), out);
                       },
                       [lt, alen](const float* in) { lt->A.assign(in, in + alen); }});
      if (lt->have_bias) {
        size_t blen = static_cast<size_t>(lt->d_out);
        parts.push_back({p + "b", blen, [lt, blen](float* out) {
                           if (lt->b.size() != blen) throw std::runtime_error("transform is not trained");
                           std::copy(lt->b.begin(), lt->b.end(), out);
                         },
                         [lt, blen](const float* in) { lt->b.assign(in, in + blen); }});
      }
      after.push_back([lt] {
        lt->set_is_orthonormal();
        lt->is_trained = true;
      });
    }
    Collect(pt->index, path + "index.", parts, after);
    after.push_back([pt] { pt->is_trained = true; });
    return;
  }
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(idx)) {
    auto* flat = dynamic_cast<faiss::IndexFlat*>(ivf->quantizer);
    if (!flat) throw std::runtime_error("an IVF index whose coarse quantizer is not flat cannot be shared");
    if (dynamic_cast<faiss::IndexIVFPQR*>(ivf)) throw std::runtime_error("IVFPQR (refined PQ) cannot be shared");
    size_t clen = ivf->nlist * static_cast<size_t>(flat->d);
    parts.push_back({path + "coarse", clen, [flat, clen](float* out) {
                       if (static_cast<size_t>(flat->ntotal) * flat->d != clen) throw std::runtime_error("coarse quantizer is not trained");
                       flat->reconstruct_n(0, flat->ntotal, out);
                     },
                     [flat, ivf](const float* in) {
                       if (flat->ntotal != 0) throw std::runtime_error("index is trained already");
                       flat->add(static_cast<faiss::Index::idx_t>(ivf->nlist), in);
                       flat->is_trained = true;
                     }});
    if (dynamic_cast<faiss::IndexIVFFlat*>(ivf)) {
      // the centroids are everything
    } else if (auto* sq = dynamic_cast<faiss::IndexIVFScalarQuantizer*>(ivf)) {
      AddSq(&sq->sq, path + "sq", parts);
    } else if (auto* pq = dynamic_cast<faiss::IndexIVFPQ*>(ivf)) {
      // Polysemous training only reorders the codebook: the centroids are still the whole state.
      AddPq(&pq->pq, path + "pq", parts);
      after.push_back([pq] {
        if (pq->by_residual) pq->precompute_table();
      });
    } else if (auto* fs = dynamic_cast<faiss::IndexIVFPQFastScan*>(ivf)) {
      AddPq(&fs->pq, path + "pq", parts);
      after.push_back([fs] {
        if (fs->by_residual && fs->metric_type == faiss::METRIC_L2) fs->precompute_table();
      });
    } else {
      throw std::runtime_error("this IVF code type cannot be shared");
    }
    after.push_back([ivf] { ivf->is_trained = true; });
    return;
  }
  if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(idx)) {
    if (!hnsw->storage) throw std::runtime_error("HNSW without storage");
    Collect(hnsw->storage, path + "storage.", parts, after);
    after.push_back([hnsw] { hnsw->is_trained = true; });
    return;
  }
  if (auto* sq = dynamic_cast<faiss::IndexScalarQuantizer*>(idx)) {
    AddSq(&sq->sq, path + "sq", parts);
    after.push_back([sq] { sq->is_trained = true; });
    return;
  }
  if (auto* pq = dynamic_cast<faiss::IndexPQ*>(idx)) {
    AddPq(&pq->pq, path + "pq", parts);
    after.push_back([pq] { pq->is_trained = true; });
    return;
  }
  if (dynamic_cast<faiss::IndexFlat*>(idx)) return;  // nothing to train
  throw std::runtime_error("this index type cannot share its training");
}

}  // namespace trained_detail

// The parts of idx's trained state, in a fixed order; `after` finishes an install.
// Throws for index types whose training cannot be shared.
inline std::vector<TrainedPart> TrainedParts(faiss::Index* idx, std::vector<std::function<void()>>* after) {
  std::vector<TrainedPart> parts;
  std::vector<std::function<void()>> fin;
  trained_detail::Collect(idx, "", parts, fin);
  if (after) *after = std::move(fin);
  return parts;
}

}  // namespace dfaiss
