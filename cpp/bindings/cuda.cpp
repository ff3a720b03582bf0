// Binds the CUDA variant when the build has it; otherwise only `has_cuda = False` and a clear reason.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace georag::bindings {

void register_cuda(py::module_& m) {
  m.attr("has_cuda") = false;
  m.attr("cuda_build_note") = "georag._core was built without CUDA (no CUDA compiler found, or GEORAG_CUDA=OFF)";
}

}  // namespace georag::bindings
