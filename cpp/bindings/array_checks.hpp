// Boundary checks shared by the CPU and CUDA bindings: numpy arrays in, validated pointers and shapes out.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "georag/search.hpp"

namespace georag::bindings {

namespace py = pybind11;

// A C-contiguous float32 matrix; `keep` owns the (possibly copied) array while the pointer is used.
struct Matrix {
  py::array_t<float, py::array::c_style> keep;
  const float* data;
  int64_t rows;
  int64_t cols;
};

// Whether `a` holds native-order elements of `want`'s type. Compared by type number, not identity: an array
// that went through pickle (e.g. to a Ray actor) carries an equal but distinct dtype object.
inline bool has_dtype(const py::array& a, const py::dtype& want) {
  const py::dtype got = a.dtype();
  return got.num() == want.num() && got.attr("isnative").cast<bool>();
}

inline std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Accepts only float32 (no silent casts of float64 or ints) and exactly 2 dimensions; expected_cols < 0
// accepts any width. Non-contiguous float32 input is copied to a contiguous buffer.
inline Matrix as_matrix(const py::array& a, const char* what, int64_t expected_cols) {
  if (!has_dtype(a, py::dtype::of<float>()))
    throw py::type_error(std::string(what) + " must be float32, got " + std::string(py::str(a.dtype())) +
                         "; convert with .astype(numpy.float32)");
  if (a.ndim() != 2)
    throw py::value_error(std::string(what) + " must be 2-D (rows, dim), got shape " + shape_of(a) +
                          (a.ndim() == 1 ? "; for one vector pass v[None, :]" : ""));
  if (expected_cols >= 0 && a.shape(1) != expected_cols)
    throw py::value_error(std::string(what) + " have dimension " + std::to_string(a.shape(1)) +
                          " but the index has dimension " + std::to_string(expected_cols));
  auto c = py::array_t<float, py::array::c_style>::ensure(a);
  if (!c) throw py::error_already_set();
  return {c, c.data(), static_cast<int64_t>(a.shape(0)), static_cast<int64_t>(a.shape(1))};
}

// A C-contiguous float16 matrix as IEEE binary16 bit patterns (numpy float16), copied only if not contiguous.
struct HalfMatrix {
  py::array keep;
  const uint16_t* data;
  int64_t rows;
  int64_t cols;
};

inline HalfMatrix as_half_matrix(const py::array& a, const char* what, int64_t expected_cols) {
  if (a.ndim() != 2)
    throw py::value_error(std::string(what) + " must be 2-D (rows, dim), got shape " + shape_of(a));
  if (expected_cols >= 0 && a.shape(1) != expected_cols)
    throw py::value_error(std::string(what) + " have dimension " + std::to_string(a.shape(1)) +
                          " but the index has dimension " + std::to_string(expected_cols));
  py::array c = py::array::ensure(a, py::array::c_style);
  if (!c) throw py::error_already_set();
  return {c, static_cast<const uint16_t*>(c.data()), static_cast<int64_t>(a.shape(0)),
          static_cast<int64_t>(a.shape(1))};
}

// None -> false (search everything); an (R, 2) int64 array -> ranges, true. The Python layer converts lists.
inline bool as_ranges(const py::object& obj, std::vector<RowRange>* out) {
  if (obj.is_none()) return false;
  auto a = py::array::ensure(obj);
  if (!a || !has_dtype(a, py::dtype::of<int64_t>()) || a.ndim() != 2 || a.shape(1) != 2)
    throw py::value_error("row_ranges must be an (R, 2) int64 array of [start, end) pairs");
  auto c = py::array_t<int64_t, py::array::c_style>::ensure(a);
  const int64_t* p = c.data();
  out->resize(static_cast<std::size_t>(a.shape(0)));
  for (std::size_t i = 0; i < out->size(); ++i) (*out)[i] = {p[2 * i], p[2 * i + 1]};
  return true;
}

struct Output {
  py::array_t<int64_t> near_ids;
  py::array_t<float> near_scores;
  py::array_t<int64_t> far_ids;
  py::array_t<float> far_scores;
  SearchOutput view;
};

inline Output make_output(int64_t nq, int64_t k_near, int64_t k_far) {
  if (k_near < 0) throw py::value_error("k_near must be >= 0, got " + std::to_string(k_near));
  if (k_far < 0) throw py::value_error("k_far must be >= 0, got " + std::to_string(k_far));
  Output o{py::array_t<int64_t>({nq, k_near}), py::array_t<float>({nq, k_near}), py::array_t<int64_t>({nq, k_far}),
           py::array_t<float>({nq, k_far}), {}};
  o.view = {o.near_ids.mutable_data(), o.near_scores.mutable_data(), o.far_ids.mutable_data(),
            o.far_scores.mutable_data()};
  return o;
}

}  // namespace georag::bindings
