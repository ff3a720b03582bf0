"""Stand-ins for the ``tensorrt`` and ``torch`` modules, recording what the TensorRT code does with them.

Neither TensorRT nor a GPU is here: these follow the documented APIs the code calls (TensorRT 10 Python
API: ``Runtime.deserialize_cuda_engine``, ``IExecutionContext.execute_async_v3(stream_handle)``,
``INetworkDefinition`` layers; torch: ``torch.cuda.device`` / ``Stream`` / ``stream`` context managers),
and record which CUDA device and stream are current at each call. The fake engine's "inference" is the
first ``dim`` pixels of each image, an independent reference the tests compare with.
"""

from __future__ import annotations

import contextlib
import itertools
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_STREAM = 0
"""The legacy default stream's handle."""


@dataclass(frozen=True)
class Device:
    type: str
    index: int | None = None


@dataclass
class Stream:
    device: int
    cuda_stream: int
    synchronized: int = 0

    def synchronize(self) -> None:
        self.synchronized += 1


class Tensor:
    """A torch tensor over numpy; ``data_ptr`` is a key of the fake torch's registry."""

    def __init__(self, owner: FakeTorch, array: Any, device: Device) -> None:
        self.owner, self.array, self.device = owner, np.asarray(array), device
        self.ptr = next(owner.ptrs)
        owner.registry[self.ptr] = self

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def to(self, device: Device, dtype: Any = None) -> Tensor:
        return Tensor(self.owner, self.array.astype(dtype or self.array.dtype), device)

    def contiguous(self) -> Tensor:
        return self

    def data_ptr(self) -> int:
        return self.ptr

    def float(self) -> Tensor:
        return Tensor(self.owner, self.array.astype(np.float32), self.device)

    def cpu(self) -> Tensor:
        return Tensor(self.owner, self.array, Device("cpu"))

    def numpy(self) -> Any:
        return self.array


class FakeCuda:
    def __init__(self) -> None:
        self.current = 0
        self.streams: list[Stream] = [Stream(0, DEFAULT_STREAM)]
        self.created: list[Stream] = []

    def is_available(self) -> bool:
        return True

    def current_device(self) -> int:
        return self.current

    @contextlib.contextmanager
    def device(self, device: Device) -> Iterator[None]:
        before, self.current = self.current, int(device.index or 0)
        try:
            yield
        finally:
            self.current = before

    def Stream(self, device: Device | None = None) -> Stream:
        index = self.current if device is None or device.index is None else device.index
        made = Stream(index, 1000 + len(self.created))
        self.created.append(made)
        return made

    @contextlib.contextmanager
    def stream(self, stream: Stream) -> Iterator[None]:
        self.streams.append(stream)
        try:
            yield
        finally:
            self.streams.pop()

    def current_stream(self, device: Device | None = None) -> Stream:
        return self.streams[-1]


class FakeTorch(types.ModuleType):
    float32, float16 = np.float32, np.float16

    def __init__(self) -> None:
        super().__init__("torch")
        self.cuda = FakeCuda()
        self.registry: dict[int, Tensor] = {}
        self.ptrs = itertools.count(1)

    def device(self, kind: str, index: int | None = None) -> Device:
        name, _, number = kind.partition(":")
        return Device(name, int(number) if number else index)

    def from_numpy(self, array: Any) -> Tensor:
        return Tensor(self, array, Device("cpu"))

    def empty(self, shape: tuple[int, ...], dtype: Any, device: Device) -> Tensor:
        return Tensor(self, np.zeros(shape, dtype), device)


class Logger:
    """``tensorrt.Logger``."""

    WARNING = 2

    def __init__(self, level: int) -> None:
        self.level = level


@dataclass
class Calls:
    """Where (device, current stream handle) each TensorRT call ran, and the stream handles passed."""

    deserialized_on: list[int] = field(default_factory=list)
    context_on: list[int] = field(default_factory=list)
    executed: list[tuple[int, int, int]] = field(default_factory=list)
    """(current device, current stream, stream handle passed) of each execute_async_v3."""


def fake_tensorrt(torch: FakeTorch, *, size: int, dim: int, max_batch: int) -> Any:
    """A ``tensorrt`` whose engine takes (n, 3, size, size) and answers (n, dim): the first dim pixels."""
    calls = Calls()

    class Context:
        def __init__(self) -> None:
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            return 1 <= shape[0] <= max_batch

        def set_tensor_address(self, name: str, ptr: int) -> None:
            self.addresses[name] = ptr

        def execute_async_v3(self, stream_handle: int) -> bool:
            cuda = torch.cuda
            calls.executed.append((cuda.current, cuda.current_stream().cuda_stream, stream_handle))
            inp = torch.registry[self.addresses["pixel_values"]].array
            out = torch.registry[self.addresses["embeddings"]].array
            out[...] = inp.reshape(inp.shape[0], -1)[:, :dim]
            return True

    class Engine:
        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return (-1, 3, size, size) if name == "pixel_values" else (-1, dim)

        def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
            return tuple((b, 3, size, size) for b in (1, 1, max_batch))

        def get_tensor_dtype(self, name: str) -> str:
            return "float"

        def create_execution_context(self) -> Context:
            calls.context_on.append(torch.cuda.current)
            return Context()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine:
            calls.deserialized_on.append(torch.cuda.current)
            return Engine()

    module = types.ModuleType("tensorrt")
    module.__dict__.update(
        __version__="10.8.0.43", Logger=Logger, Runtime=Runtime, nptype=lambda _: np.float32, calls=calls
    )
    return module


@dataclass
class Layer:
    type: str
    precision: str | None = None
    num_outputs: int = 1
    output_types: dict[int, str] = field(default_factory=dict)

    def set_output_type(self, index: int, dtype: str) -> None:
        self.output_types[index] = dtype


def fake_tensorrt_builder(layers: list[Layer], version: str = "10.8.0.43") -> Any:
    """A ``tensorrt`` whose parsed network holds ``layers``; records the builder config's flags."""
    flags: set[str] = set()

    class Network:
        num_layers = len(layers)

        def get_layer(self, i: int) -> Layer:
            return layers[i]

    class Config:
        def set_flag(self, flag: str) -> None:
            flags.add(flag)

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            pass

        def add_optimization_profile(self, profile: Any) -> None:
            pass

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Any:
            return types.SimpleNamespace(set_shape=lambda *args: None)

        def build_serialized_network(self, network: Any, config: Any) -> bytes:
            return b"serialized engine"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Any, logger: Any) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            return True

    module = types.ModuleType("tensorrt")
    module.__dict__.update(
        __version__=version,
        Logger=Logger,
        Builder=Builder,
        OnnxParser=OnnxParser,
        BuilderFlag=types.SimpleNamespace(
            FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY_PRECISION_CONSTRAINTS"
        ),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
        LayerType=types.SimpleNamespace(
            NORMALIZATION="NORMALIZATION", SOFTMAX="SOFTMAX", MATRIX_MULTIPLY="MATRIX_MULTIPLY"
        ),
        float32="float32",
        flags=flags,
    )
    return module
