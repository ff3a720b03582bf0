// PYBIND11_MODULE(_core): numpy arrays -> pointers, shape/dtype checks, GIL release. No search logic here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "array_checks.hpp"
#include "georag/search.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace georag::bindings {
void register_cuda(py::module_& m);
}  // namespace georag::bindings
namespace georag::detail {  // cpp/src/certify.hpp: the test-only multiplier of the certified error bounds
float certify_bound_scale();
void set_certify_bound_scale(float scale);
}  // namespace georag::detail

namespace {

using georag::FlatIndex;
using georag::bindings::HalfMatrix;
using georag::bindings::Matrix;
using georag::bindings::as_half_matrix;
using georag::bindings::as_matrix;
using georag::bindings::as_ranges;
using georag::bindings::make_output;

py::tuple search(const FlatIndex& self, const py::array& queries, int64_t k_near, int64_t k_far,
                 const py::object& row_ranges, int num_threads, int64_t blas_min_batch, int64_t tile_rows,
                 int64_t amx_min_batch, bool use_amx) {
  Matrix q = as_matrix(queries, "queries", self.dim());
  std::vector<georag::RowRange> ranges;
  const bool restricted = as_ranges(row_ranges, &ranges);
  georag::SearchParams params;
  params.k_near = k_near;
  params.k_far = k_far;
  params.num_threads = num_threads;
  params.blas_min_batch = blas_min_batch;
  params.tile_rows = tile_rows;
  params.amx_min_batch = amx_min_batch;
  params.use_amx = use_amx;
  auto out = make_output(q.rows, k_near, k_far);
  georag::SearchFootprint fp;
  {
    py::gil_scoped_release release;
    fp = self.search(q.data, q.rows, params, out.view, restricted ? &ranges : nullptr);
  }
  return py::make_tuple(out.near_ids, out.near_scores, out.far_ids, out.far_scores, fp.bytes);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "georag's C++ search core: exact nearest AND farthest neighbors in one pass over the database.";
  m.attr("__version__") = GEORAG_VERSION_INFO;

  py::class_<FlatIndex>(m, "FlatIndex", py::dynamic_attr())
      .def(py::init([](const py::array& vectors, bool normalize, int num_threads) {
             if (georag::bindings::has_dtype(vectors, py::dtype("float16"))) {
               HalfMatrix h = as_half_matrix(vectors, "vectors", -1);
               py::gil_scoped_release release;
               return FlatIndex::from_half(h.data, h.rows, h.cols, normalize, num_threads).release();
             }
             Matrix v = as_matrix(vectors, "vectors", -1);
             py::gil_scoped_release release;
             return new FlatIndex(v.data, v.rows, v.cols, normalize, num_threads);
           }),
           "vectors"_a, "normalize"_a = true, "num_threads"_a = 0)
      .def_static(
          "wrap",
          [](const py::list& segments, int64_t d, int num_threads) {
            // The segments are checked here (dtype, shape, C order, one dtype for all) and kept alive by the
            // returned object's `_segments`; they are searched in place.
            std::vector<georag::RowSegment> segs;
            py::list keep;
            bool any = false, half = false;
            for (std::size_t i = 0; i < segments.size(); ++i) {
              py::array a = segments[i].cast<py::array>();
              const bool is_half = georag::bindings::has_dtype(a, py::dtype("float16"));
              if (!is_half && !georag::bindings::has_dtype(a, py::dtype::of<float>()))
                throw py::type_error("segment " + std::to_string(i) + " must be float16 or float32, got " +
                                     std::string(py::str(a.dtype())));
              if (any && is_half != half)
                throw py::type_error("every segment must have the same dtype; segment " + std::to_string(i) +
                                     " differs");
              any = true;
              half = is_half;
              if (a.ndim() != 2 || a.shape(1) != d)
                throw py::value_error("segment " + std::to_string(i) + " must have shape (rows, " +
                                      std::to_string(d) + "), got " + georag::bindings::shape_of(a));
              if (!(a.flags() & py::array::c_style))
                throw py::value_error("segment " + std::to_string(i) +
                                      " is not C-contiguous: it cannot be searched in place");
              segs.push_back({a.data(), static_cast<int64_t>(a.shape(0))});
              keep.append(a);
            }
            auto index = FlatIndex::wrap(half ? georag::RowType::f16 : georag::RowType::f32, std::move(segs), d,
                                         num_threads);
            py::object obj = py::cast(std::move(index));
            obj.attr("_segments") = py::tuple(keep);
            return obj;
          },
          "segments"_a, "d"_a, "num_threads"_a = 0,
          "Searches C-contiguous (rows, d) float16 or float32 arrays in place, taken as normalized; no copy.")
      .def_static("reserve", &FlatIndex::reserve, "n"_a, "d"_a, "normalize"_a = true, "num_threads"_a = 0,
                  "An empty index with room for n rows of dimension d; fill it with append().")
      .def(
          "append",
          [](FlatIndex& self, const py::array& rows) {
            Matrix m = as_matrix(rows, "rows", self.dim());
            py::gil_scoped_release release;
            self.append(m.data, m.rows);
          },
          "rows"_a, "Copies an (m, d) float32 chunk into the next m rows, normalizing and checking them.")
      .def_property_readonly("filled", &FlatIndex::filled)
      .def("search", &search, "queries"_a, "k_near"_a = 16, "k_far"_a = 16, "row_ranges"_a = py::none(),
           "num_threads"_a = 0, "blas_min_batch"_a = georag::SearchParams{}.blas_min_batch,
           "tile_rows"_a = 0, "amx_min_batch"_a = georag::SearchParams{}.amx_min_batch,
           "use_amx"_a = georag::SearchParams{}.use_amx)
      .def_property_readonly("dtype",
                             [](const FlatIndex& self) {
                               return self.row_type() == georag::RowType::f16 ? "float16" : "float32";
                             })
      .def_property_readonly("borrowed", &FlatIndex::borrowed)
      .def_property_readonly("owned_bytes", &FlatIndex::owned_bytes)
      .def_property_readonly("ntotal", &FlatIndex::size)
      .def_property_readonly("dim", &FlatIndex::dim)
      .def_property_readonly("normalized", &FlatIndex::normalized)
      .def_property("num_threads", &FlatIndex::num_threads, &FlatIndex::set_num_threads)
      .def("vectors",
           [](py::object self_obj) -> py::object {
             const auto& self = self_obj.cast<const FlatIndex&>();
             if (self.borrowed())
               throw py::value_error("this index searches the caller's arrays in place; read those instead");
             py::array view;
             if (self.row_type() == georag::RowType::f16) {
               view = py::array(py::dtype("float16"), {self.size(), self.dim()},
                                {static_cast<py::ssize_t>(self.dim() * 2), static_cast<py::ssize_t>(2)},
                                self.half_rows(), self_obj);
             } else {
               // Only the appended rows: the rest of a reserved index is uninitialized memory.
               view = py::array_t<float>({self.filled(), self.dim()},
                                         {static_cast<py::ssize_t>(self.stride() * sizeof(float)),
                                          static_cast<py::ssize_t>(sizeof(float))},
                                         self.row(0), self_obj);
             }
             py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
             return view;
           },
           "A read-only view of the stored rows (float32 normalized when the index normalizes; float16 as "
           "given, for an index built from float16).");

  m.def("kernel_name", &FlatIndex::kernel_name, "The CPU kernel variant chosen for this processor.");
  m.def("amx_status", &FlatIndex::amx_status,
        "'available', or why batches over float16 rows cannot use AMX-BF16 tiles here.");
  m.def("blas_info", &georag::blas_info, "The BLAS library the core was built with.");
  m.def(
      "_set_certify_bound_scale",
      [](float scale) {
        const float before = georag::detail::certify_bound_scale();
        georag::detail::set_certify_bound_scale(scale);
        return before;
      },
      "scale"_a,
      "TEST ONLY: multiplies the certified error bounds of the AMX and SGEMM float16 paths (process-wide; "
      "returns the previous value). Below 1 the results are no longer guaranteed exact; the tests use 0 to "
      "show that their bit-equality checks catch a missing bound.");
  georag::bindings::register_cuda(m);
}
