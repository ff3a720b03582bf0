// Binds the CUDA variant when the build has it; otherwise only `has_cuda = False` and a clear reason.
// Numpy arrays in, pointers out, GIL released around device work. No search logic here.
#include <pybind11/pybind11.h>

#if defined(GEORAG_WITH_CUDA)
#include <pybind11/numpy.h>

#include <cstddef>
#include <string>
#include <vector>

#include "array_checks.hpp"
#include "georag/cuda.hpp"
#include "georag/search.hpp"
#endif

namespace py = pybind11;

namespace georag::bindings {

#if defined(GEORAG_WITH_CUDA)
namespace {

using namespace pybind11::literals;

py::tuple cuda_search(const CudaFlatIndex& self, const py::array& queries, int64_t k_near, int64_t k_far,
                      const py::object& row_ranges, int64_t tile_rows) {
  Matrix q = as_matrix(queries, "queries", self.dim());
  std::vector<RowRange> ranges;
  const bool restricted = as_ranges(row_ranges, &ranges);
  SearchParams params;
  params.k_near = k_near;
  params.k_far = k_far;
  params.tile_rows = tile_rows;
  auto out = make_output(q.rows, k_near, k_far);
  {
    py::gil_scoped_release release;
    self.search(q.data, q.rows, params, out.view, restricted ? &ranges : nullptr);
  }
  // The fifth element mirrors FlatIndex.search (host scratch bytes); the CUDA path reports 0.
  return py::make_tuple(out.near_ids, out.near_scores, out.far_ids, out.far_scores, std::size_t{0});
}

}  // namespace

void register_cuda(py::module_& m) {
  m.attr("has_cuda") = true;
  m.attr("cuda_build_note") = "georag._core was built with the CUDA variant (NOT YET RUN ON A GPU by the project)";

  py::class_<CudaFlatIndex>(m, "CudaFlatIndex")
      .def(py::init([](const py::array& vectors, bool normalize, int device) {
             Matrix v = as_matrix(vectors, "vectors", -1);
             py::gil_scoped_release release;
             return new CudaFlatIndex(v.data, v.rows, v.cols, normalize, device);
           }),
           "vectors"_a, "normalize"_a = true, "device"_a = 0)
      .def("search", &cuda_search, "queries"_a, "k_near"_a = 16, "k_far"_a = 16, "row_ranges"_a = py::none(),
           "tile_rows"_a = 0)
      .def_property_readonly("ntotal", &CudaFlatIndex::size)
      .def_property_readonly("dim", &CudaFlatIndex::dim)
      .def_property_readonly("device", &CudaFlatIndex::device);

  m.def(
      "cuda_device_available",
      [] {
        std::string why;
        bool ok = false;
        {
          py::gil_scoped_release release;  // the first call initializes the CUDA runtime
          ok = cuda_device_available(&why);
        }
        return py::make_tuple(ok, why);
      },
      "(True, description) when the CUDA runtime sees a usable device, else (False, the reason).");
}

#else

void register_cuda(py::module_& m) {
  m.attr("has_cuda") = false;
  m.attr("cuda_build_note") = "georag._core was built without CUDA (no CUDA compiler found, or GEORAG_CUDA=OFF)";
}

#endif

}  // namespace georag::bindings
