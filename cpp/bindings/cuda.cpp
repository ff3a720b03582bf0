// Binds the CUDA variant when the build has it; otherwise only `has_cuda = False` and a clear reason.
// Numpy arrays in, pointers out, GIL released around device work. No search logic here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <string>
#include <vector>

#include "array_checks.hpp"
#include "georag/cuda_twin.hpp"
#include "georag/search.hpp"
#if defined(GEORAG_WITH_CUDA)
#include <pybind11/stl.h>

#include <exception>

#include "georag/cuda.hpp"
#endif

namespace py = pybind11;

namespace georag::bindings {

namespace {

using namespace pybind11::literals;

py::dict bound_check_dict(const cuda_detail::BoundCheck& c) {
  return py::dict("ratio"_a = c.ratio, "limit"_a = c.limit, "ok"_a = c.ratio < c.limit, "query"_a = c.query,
                  "row"_a = c.row, "approx"_a = c.approx, "exact"_a = c.exact, "bound"_a = c.bound,
                  "queries"_a = c.queries, "rows"_a = c.rows);
}

// The CPU twin of the CUDA search (every build): the device's selection and certification code on the host.
void register_twin(py::module_& m) {
  m.def(
      "_cuda_twin_search",
      [](const py::array& rows, const py::array& queries, int64_t k_near, int64_t k_far, const std::string& approx,
         bool normalize, const py::object& row_ranges, int64_t tile_rows, std::size_t l2_bytes, uint64_t seed,
         double bound_scale) {
        if (!has_dtype(rows, py::dtype("float16"))) throw py::type_error("rows must be float16");
        HalfMatrix h = as_half_matrix(rows, "rows", -1);
        Matrix q = as_matrix(queries, "queries", h.cols);
        std::vector<RowRange> ranges;
        const bool restricted = as_ranges(row_ranges, &ranges);
        SearchParams params;
        params.k_near = k_near;
        params.k_far = k_far;
        auto out = make_output(q.rows, k_near, k_far);
        cuda_detail::TwinOptions opt;
        opt.approx = approx;
        opt.tile_rows = tile_rows;
        opt.l2_bytes = l2_bytes;
        opt.seed = seed;
        opt.bound_scale = bound_scale;
        cuda_detail::TwinStats st;
        {
          py::gil_scoped_release release;
          st = cuda_detail::cuda_twin_search(h.data, h.rows, h.cols, normalize, q.data, q.rows, params, out.view,
                                             restricted ? &ranges : nullptr, opt);
        }
        py::dict stats("gemm"_a = st.gemm, "tiles"_a = st.tiles, "candidates"_a = st.candidates,
                       "error_bound"_a = st.error_bound);
        return py::make_tuple(out.near_ids, out.near_scores, out.far_ids, out.far_scores, stats);
      },
      "rows"_a, "queries"_a, "k_near"_a, "k_far"_a, "approx"_a = "fp16-gemm", "normalize"_a = false,
      "row_ranges"_a = py::none(), "tile_rows"_a = 0, "l2_bytes"_a = std::size_t{50} << 20, "seed"_a = 0,
      "bound_scale"_a = 1.0,
      "Test hook: the CUDA search's certified selection run on the host (see cpp/src/cuda/certified.hpp).");
  m.def(
      "_cuda_twin_bound_check",
      [](const py::array& rows, const py::array& queries, const std::string& approx, bool normalize,
         int64_t row_start, int64_t tile_rows, std::size_t l2_bytes, uint64_t seed) {
        if (!has_dtype(rows, py::dtype("float16"))) throw py::type_error("rows must be float16");
        HalfMatrix h = as_half_matrix(rows, "rows", -1);
        Matrix q = as_matrix(queries, "queries", h.cols);
        cuda_detail::TwinOptions opt;
        opt.approx = approx;
        opt.tile_rows = tile_rows;
        opt.l2_bytes = l2_bytes;
        opt.seed = seed;
        cuda_detail::BoundCheck c;
        {
          py::gil_scoped_release release;
          c = cuda_detail::cuda_twin_bound_check(h.data, h.rows, h.cols, normalize, q.data, q.rows, row_start, opt);
        }
        return bound_check_dict(c);
      },
      "rows"_a, "queries"_a, "approx"_a = "fp16-gemm", "normalize"_a = false, "row_start"_a = 0, "tile_rows"_a = 0,
      "l2_bytes"_a = std::size_t{50} << 20, "seed"_a = 0,
      "Test hook: the device bound check (CudaFlatIndex._bound_check) with the twin's emulated GEMM.");
  m.def(
      "_cuda_bound_stress_set",
      [](int64_t d) {
        std::vector<uint16_t> rows;
        std::vector<float> queries;
        int64_t nr = 0, nq = 0;
        cuda_detail::bound_stress_set(d, &rows, &queries, &nr, &nq);
        py::array_t<uint16_t> r({nr, d});
        std::copy(rows.begin(), rows.end(), r.mutable_data());
        py::array_t<float> q({nq, d});
        std::copy(queries.begin(), queries.end(), q.mutable_data());
        return py::make_tuple(r.attr("view")(py::dtype("float16")), q);
      },
      "d"_a,
      "The bound check's stress set (rows float16, queries float32), as CudaFlatIndex's GEMM self-check uses it.");
  m.def(
      "cuda_memory_estimate",
      [](int64_t n, int64_t d, int64_t batch, int64_t k_near, int64_t k_far, std::size_t l2_bytes) {
        if (n < 0 || d <= 0 || batch <= 0 || k_near < 0 || k_far < 0 || k_near > INT_MAX || k_far > INT_MAX)
          throw py::value_error("need n >= 0, d > 0, batch > 0 and 0 <= k <= 2^31 - 1");
        const auto e = cuda_detail::memory_estimate(n, d, batch, static_cast<int>(k_near), static_cast<int>(k_far),
                                                    l2_bytes);
        return py::dict("rows"_a = e.rows, "per_row"_a = e.per_row, "workspace"_a = e.workspace, "total"_a = e.total);
      },
      "n"_a, "d"_a, "batch"_a = 256, "k_near"_a = 16, "k_far"_a = 16, "l2_bytes"_a = std::size_t{50} << 20,
      "Device bytes a CudaFlatIndex of n x d rows needs: rows, per-row arrays, and one search's workspace.");
}

}  // namespace

#if defined(GEORAG_WITH_CUDA)
namespace {

using namespace pybind11::literals;

py::tuple cuda_search(const CudaFlatIndex& self, const py::array& queries, int64_t k_near, int64_t k_far,
                      const py::object& row_ranges, int64_t tile_rows, int64_t gemm_min_batch) {
  Matrix q = as_matrix(queries, "queries", self.dim());
  std::vector<RowRange> ranges;
  const bool restricted = as_ranges(row_ranges, &ranges);
  SearchParams params;
  params.k_near = k_near;
  params.k_far = k_far;
  params.tile_rows = tile_rows;
  CudaSearchParams cuda;
  cuda.gemm_min_batch = gemm_min_batch;
  auto out = make_output(q.rows, k_near, k_far);
  const int before = self.gemm_check_state();
  {
    py::gil_scoped_release release;
    self.search(q.data, q.rows, params, out.view, restricted ? &ranges : nullptr, cuda);
  }
  if (before != 2 && self.gemm_check_state() == 2) {  // the GEMM self-check failed in this search: say so once
    const auto c = self.gemm_self_check();
    py::module_::import("warnings")
        .attr("warn")("CudaFlatIndex: on this GPU the tensor-core GEMM's error reached " + std::to_string(c.ratio) +
                          " of the certified bound (limit " + std::to_string(c.limit) +
                          "), so the bound's assumption about cuBLAS does not hold here; this index now scores "
                          "every batch with the exact kernel (same results, slower). Please report the GPU, "
                          "driver and cuBLAS version.",
                      py::module_::import("builtins").attr("RuntimeWarning"), 2);
  }
  // The fifth element mirrors FlatIndex.search (host scratch bytes); the CUDA path reports 0.
  return py::make_tuple(out.near_ids, out.near_scores, out.far_ids, out.far_scores, std::size_t{0});
}

}  // namespace

void register_cuda(py::module_& m) {
  register_twin(m);
  m.attr("has_cuda") = true;
  m.attr("cuda_build_note") = "georag._core was built with the CUDA variant (NOT RUN ON A GPU by the project yet)";

  // cuBLAS missing: georag.errors.MissingDependencyError (an ImportError), naming `pip install nvidia-cublas`.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const cuda_detail::MissingCublas& e) {
      py::object cls = py::module_::import("georag.errors").attr("MissingDependencyError");
      PyErr_SetString(cls.ptr(), e.what());
    }
  });

  py::class_<CudaFlatIndex>(m, "CudaFlatIndex")
      .def(py::init([](const py::array& vectors, bool normalize, int device) {
             if (has_dtype(vectors, py::dtype("float16"))) {
               HalfMatrix h = as_half_matrix(vectors, "vectors", -1);
               py::gil_scoped_release release;
               return CudaFlatIndex::from_half(h.data, h.rows, h.cols, normalize, device).release();
             }
             Matrix v = as_matrix(vectors, "vectors", -1);
             py::gil_scoped_release release;
             return new CudaFlatIndex(v.data, v.rows, v.cols, normalize, device);
           }),
           "vectors"_a, "normalize"_a = true, "device"_a = 0)
      .def("search", &cuda_search, "queries"_a, "k_near"_a = 16, "k_far"_a = 16, "row_ranges"_a = py::none(),
           "tile_rows"_a = 0, "gemm_min_batch"_a = 0)
      .def(
          "bound_check",
          [](const CudaFlatIndex& self, const py::array& queries, int64_t row_start, int64_t tile_rows) {
            Matrix q = as_matrix(queries, "queries", self.dim());
            cuda_detail::BoundCheck c;
            {
              py::gil_scoped_release release;
              c = self.bound_check(q.data, q.rows, row_start, tile_rows);
            }
            return bound_check_dict(c);
          },
          "queries"_a, "row_start"_a = 0, "tile_rows"_a = 0,
          "Test hook: the GEMM tile against the exact tile for these queries over one tile of rows from row_start; "
          "the largest |approx - exact| / e (must stay below limit = 1 / 1.0625).")
      .def_property_readonly("gemm_self_check",
                             [](const CudaFlatIndex& self) -> py::object {
                               const int state = self.gemm_check_state();
                               if (state == 0) return py::none();
                               return bound_check_dict(self.gemm_self_check());
                             })
      .def_property_readonly("row_bytes", &CudaFlatIndex::row_bytes)
      .def_property_readonly("workspace_bytes", &CudaFlatIndex::workspace_bytes)
      .def_property_readonly("ntotal", &CudaFlatIndex::size)
      .def_property_readonly("dim", &CudaFlatIndex::dim)
      .def_property_readonly("device", &CudaFlatIndex::device);

  m.def(
      "cuda_set_cublas_dirs", [](const std::vector<std::string>& dirs) { cuda_detail::set_cublas_dirs(dirs); },
      "dirs"_a, "Folders tried first for libcublas.so.<major> (georag.search.cuda passes the nvidia-cublas wheel's).");
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
  register_twin(m);
  m.attr("has_cuda") = false;
  m.attr("cuda_build_note") = "georag._core was built without CUDA (no CUDA compiler found, or GEORAG_CUDA=OFF)";
}

#endif

}  // namespace georag::bindings
