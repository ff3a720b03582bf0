// Bounded top-k selection shared by the CPU and CUDA kernels: one heap type, two orders (nearest, farthest).
#pragma once

#include <cstdint>
#include <limits>

#if defined(__CUDACC__)
#define GEORAG_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// always_inline: the kernels are compiled once per instruction set; an out-of-line copy shared through the
// linker could run AVX-512 code on a CPU without it.
#define GEORAG_HD inline __attribute__((always_inline))
#else
#define GEORAG_HD inline
#endif

namespace georag {

// Nearest first: higher cosine similarity ranks first; equal scores rank by lower id.
struct NearOrder {
  GEORAG_HD static bool before(float sa, int64_t ia, float sb, int64_t ib) {
    return sa > sb || (sa == sb && ia < ib);
  }
  // A score that no candidate can beat: admission threshold of an empty-capacity heap.
  GEORAG_HD static float never() { return std::numeric_limits<float>::infinity(); }
  GEORAG_HD static float always() { return -std::numeric_limits<float>::infinity(); }
  // True when `s` may enter a full heap whose worst kept score is `worst` (ties decided later by id).
  GEORAG_HD static bool may_enter(float s, float threshold) { return s >= threshold; }
};

// Farthest first: lower cosine similarity ranks first; equal scores rank by lower id.
struct FarOrder {
  GEORAG_HD static bool before(float sa, int64_t ia, float sb, int64_t ib) {
    return sa < sb || (sa == sb && ia < ib);
  }
  GEORAG_HD static float never() { return -std::numeric_limits<float>::infinity(); }
  GEORAG_HD static float always() { return std::numeric_limits<float>::infinity(); }
  GEORAG_HD static bool may_enter(float s, float threshold) { return s <= threshold; }
};

// A heap over caller-owned arrays holding the best `cap` candidates seen so far under `Order`.
// The root is the WORST kept candidate, so admission is one comparison against it. The storage is
// external so the same code runs on registers/local memory in a CUDA thread and on the stack on a CPU.
template <class Order>
struct BoundedHeap {
  float* scores;
  int64_t* ids;
  int size;
  int cap;

  GEORAG_HD BoundedHeap(float* s, int64_t* i, int capacity) : scores(s), ids(i), size(0), cap(capacity) {}

  // The score a candidate must reach (inclusive) to possibly enter; cheap pre-filter for hot loops.
  GEORAG_HD float threshold() const {
    if (cap == 0) return Order::never();
    return size < cap ? Order::always() : scores[0];
  }

  GEORAG_HD void push(float s, int64_t id) {
    if (size < cap) {
      int i = size++;
      // Sift up: move the new candidate above parents that rank before it (they are better).
      while (i > 0) {
        int p = (i - 1) / 2;
        if (!Order::before(scores[p], ids[p], s, id)) break;
        scores[i] = scores[p];
        ids[i] = ids[p];
        i = p;
      }
      scores[i] = s;
      ids[i] = id;
    } else if (cap > 0 && Order::before(s, id, scores[0], ids[0])) {
      sift_down_from_root(s, id, size);
    }
  }

  // Writes the kept candidates best first into out_s/out_i (length >= cap); empties the heap.
  // Slots past the number kept are padded with id -1 and a NaN score.
  GEORAG_HD void drain_sorted(float* out_s, int64_t* out_i) {
    for (int j = size; j < cap; ++j) {
      out_s[j] = std::numeric_limits<float>::quiet_NaN();
      out_i[j] = -1;
    }
    // In-place safe (out may alias the heap storage): the tail is read before its slot is overwritten.
    while (size > 0) {
      const int last = --size;
      const float tail_s = scores[last];
      const int64_t tail_i = ids[last];
      out_s[last] = scores[0];
      out_i[last] = ids[0];
      if (last > 0) sift_down_from_root(tail_s, tail_i, last);
    }
  }

 private:
  // Places (s, id) at the root of a heap of `n` elements and restores the worst-at-root property.
  GEORAG_HD void sift_down_from_root(float s, int64_t id, int n) {
    int i = 0;
    for (;;) {
      int c = 2 * i + 1;
      if (c >= n) break;
      // Pick the worse child: the one the other ranks before.
      if (c + 1 < n && Order::before(scores[c], ids[c], scores[c + 1], ids[c + 1])) ++c;
      if (!Order::before(s, id, scores[c], ids[c])) break;
      scores[i] = scores[c];
      ids[i] = ids[c];
      i = c;
    }
    scores[i] = s;
    ids[i] = id;
  }
};

}  // namespace georag
