// The C++ API of the CUDA variant: the same search as FlatIndex with the database resident on one GPU.
// Compiled only when CMake finds a CUDA toolkit (GEORAG_CUDA=AUTO|ON); NOT YET RUN ON A GPU by the project.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "georag/search.hpp"

namespace georag {

// True when the CUDA runtime reports at least one usable device; otherwise false with the reason in *why.
bool cuda_device_available(std::string* why);

class CudaFlatIndex {
 public:
  // Validates and normalizes exactly as FlatIndex (same errors), then uploads the rows to `device`.
  CudaFlatIndex(const float* vectors, int64_t n, int64_t d, bool normalize = true, int device = 0);
  ~CudaFlatIndex();
  CudaFlatIndex(const CudaFlatIndex&) = delete;
  CudaFlatIndex& operator=(const CudaFlatIndex&) = delete;

  int64_t size() const { return n_; }
  int64_t dim() const { return d_; }
  int device() const { return device_; }

  // Same contract as FlatIndex::search (outputs are host buffers; ids, order, ties and padding identical).
  void search(const float* queries, int64_t nq, const SearchParams& params, const SearchOutput& out,
              const std::vector<RowRange>* ranges = nullptr) const;

 private:
  int64_t n_;
  int64_t d_;
  int64_t stride_;
  int device_;
  float* rows_ = nullptr;  // device memory, n_ * stride_ floats, normalized, zero-padded
};

}  // namespace georag
