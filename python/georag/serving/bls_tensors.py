"""BLS output tensors as numpy, wherever the called model left them.

A model on a GPU (siglip_trt: TensorRT) answers a BLS call with its outputs in GPU memory, where
``Tensor.as_numpy()`` fails (the step then fails with INTERNAL on every request). Two ways round it, both
from the Python backend's README (triton-inference-server/python_backend, "Business Logic Scripting" and
"Interoperability and GPU Support"):

* ask for CPU outputs: ``InferenceRequest(..., preferred_memory=PreferredMemory(TRITONSERVER_MEMORY_CPU,
  0))``, "starting from the 23.04 release" (`cpu_output_options`; a stub without ``PreferredMemory``
  gets no such argument);
* a tensor that is still not in CPU memory (``Tensor.is_cpu()`` false: an older stub, or a backend that
  ignores the preference) is copied through DLPack (``Tensor.to_dlpack()``) with torch, or refused with a
  message naming the fix when torch is not installed (`output_array`).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.serving.errors import StepFailed

CPU_DEVICE_ID = 0
"""``preferred_device_id`` of a CPU preference (CPU memory has one device)."""


def cpu_output_options(utils: ModuleType) -> dict[str, Any]:
    """``InferenceRequest`` keyword arguments asking for the outputs in CPU memory: ``preferred_memory``
    where ``utils`` (``triton_python_backend_utils``) has ``PreferredMemory`` (Triton 23.04 and later),
    else none (the outputs then come where the model left them: see `output_array`)."""
    preferred = getattr(utils, "PreferredMemory", None)
    cpu = getattr(utils, "TRITONSERVER_MEMORY_CPU", None)
    if preferred is None or cpu is None:
        return {}
    return {"preferred_memory": preferred(cpu, CPU_DEVICE_ID)}


def output_array(tensor: Any, step: str) -> npt.NDArray[Any]:
    """``tensor`` (a BLS output) as numpy: ``as_numpy()`` in CPU memory, else copied through DLPack."""
    is_cpu = getattr(tensor, "is_cpu", None)
    if is_cpu is None or is_cpu():
        return np.asarray(tensor.as_numpy())
    return _through_dlpack(tensor, step)


def _through_dlpack(tensor: Any, step: str) -> npt.NDArray[Any]:
    try:
        from torch.utils.dlpack import from_dlpack
    except ImportError:
        raise StepFailed(
            f"the {step} model answered in GPU memory and this Triton did not move it to CPU memory "
            "(preferred_memory needs Triton 23.04 or later); install torch in the server's Python "
            "environment to copy it"
        ) from None
    return np.asarray(from_dlpack(tensor.to_dlpack()).cpu().numpy())
