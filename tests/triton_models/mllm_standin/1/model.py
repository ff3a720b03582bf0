"""A scripted multimodal-LLM stand-in for Triton's Python backend, with the vLLM backend's tensor contract.

It answers like the Triton vLLM backend does when ``stream`` is false: one final response whose
``text_output`` holds the n sampled answers (the prompt prepended to each unless
``exclude_input_in_output`` is true). What it answers is chosen by markers in the prompt text:

- ``[[stall]]``: wait 30 s before answering (a stalled server; the client must time out);
- ``[[echo]]``: prepend the prompt even when ``exclude_input_in_output`` is true (a misbehaving server);
- ``[[slow]]``: take 0.2 s, counting how many such requests run at once (``received.slow_in_flight``);
- ``[[hold]]``: wait until 64 ``[[hold]]`` requests are waiting at once (10 s at most), reporting the most
  seen at once (``received.hold_peak``): a burst of 64 that the server lets through reaches the LLM whole
  however slowly it trickles in, and is answered together; one that the server caps never passes the cap;
- ``[[garbage]]``: answer ``I cannot tell.`` n times;
- ``[[error]]``: fail the request with an error response;
- a prior prompt (the vpr-guided route's, asking for an "ISO 3166-1" country code): n JSON answers
  ``{"country": "US", "latitude": ..., "longitude": ..., "received": {...}}``, sample ``i`` at New York +
  ``i`` * 0.01 degrees (``[[garbage]]`` still answers garbage);
- otherwise: n JSON answers ``{"latitude": ..., "longitude": ..., "received": {...}}``, sample ``i`` at
  Paris + ``i`` * 0.01 degrees, with ``received`` reporting what arrived (sampling parameters, the exclude
  and stream flags, the image count, byte length and SHA-256) so tests can check the request on the wire.

Each request is answered on its own thread, so a stalled request does not hold up the others.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

STALL_S = 30.0
SLOW_S = 0.2
HOLD_COUNT = 64
HOLD_MAX_S = 10.0
PARIS = (48.8566, 2.3522)
NEW_YORK = (40.7128, -74.006)
PRIOR_COUNTRY = "US"
PRIOR_MARK = "ISO 3166-1"
"""What only the prior prompt (georag/llm/templates/prior.txt) asks for."""


class RequestError(ValueError):
    """A request the stand-in refuses (as vLLM would refuse it), answered with an error response."""


def _optional_scalar(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)[0]


def _decode_images(request: Any) -> list[bytes]:
    tensor = pb_utils.get_input_tensor_by_name(request, "image")
    if tensor is None:
        return []
    images = []
    for i, item in enumerate(tensor.as_numpy().reshape(-1)):
        text = item.decode("utf-8") if isinstance(item, bytes) else str(item)
        try:
            # validate=True: the vLLM backend would fail on anything that is not strict base64 image data.
            images.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"image[{i}] is not valid base64: {exc}") from exc
    return images


def _answers(prompt: str, params: dict[str, Any], received: dict[str, Any]) -> list[str]:
    n = int(params.get("n", 1))
    if "[[garbage]]" in prompt:
        return ["I cannot tell."] * n
    prior = PRIOR_MARK in prompt
    lat, lon = NEW_YORK if prior else PARIS
    answers = []
    for i in range(n):
        body: dict[str, Any] = {
            "latitude": round(lat + 0.01 * i, 4),
            "longitude": round(lon + 0.01 * i, 4),
            "received": {**received, "sample": i},
        }
        if prior:
            body["country"] = PRIOR_COUNTRY
        answers.append(json.dumps(body, sort_keys=True))
    return answers


class TritonPythonModel:
    """The Python-backend entry point: `execute` hands each request to a thread and returns at once."""

    def initialize(self, args: dict[str, str]) -> None:
        self._stop = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._slow_in_flight = 0
        self._holding = 0
        self._hold_peak = 0
        self._hold_full = threading.Condition(self._lock)
        self._log = pb_utils.Logger

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            thread = threading.Thread(target=self._respond, args=(request,), daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _respond(self, request: Any) -> None:
        sender = request.get_response_sender()
        try:
            response = self._answer(request, sender)
        except Exception as exc:  # every failure must still end the request, or the client waits forever
            self._log.log_warn(f"mllm_standin: refusing a request: {exc}")
            code = pb_utils.TritonError.INVALID_ARG if isinstance(exc, RequestError) else None
            error = pb_utils.TritonError(str(exc)) if code is None else pb_utils.TritonError(str(exc), code)
            response = pb_utils.InferenceResponse(error=error)
        try:
            sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as exc:  # the client may have cancelled (a timed-out stall); nothing to answer
            self._log.log_info(f"mllm_standin: could not send a response: {exc}")
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _answer(self, request: Any, sender: Any) -> Any:
        raw = _optional_scalar(request, "text_input")
        if raw is None:
            raise RequestError("text_input is required")
        prompt = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        images = _decode_images(request)
        raw_params = _optional_scalar(request, "sampling_parameters")
        try:
            params = json.loads(raw_params.decode("utf-8")) if raw_params is not None else {}
        except ValueError as exc:
            raise RequestError(f"sampling_parameters is not JSON: {exc}") from exc
        if not isinstance(params, dict):
            raise RequestError("sampling_parameters must be a JSON object")
        stream = _optional_scalar(request, "stream")
        exclude = _optional_scalar(request, "exclude_input_in_output")
        # The vLLM backend's rule for non-streaming requests: the prompt is prepended unless excluded.
        prepend = not bool(exclude) if exclude is not None else not bool(stream)

        if "[[error]]" in prompt:
            raise RuntimeError("scripted failure ([[error]] in the prompt)")
        if "[[stall]]" in prompt:
            self._stall(sender)
        if "[[echo]]" in prompt:
            prepend = True
        slow_in_flight = self._slow(prompt)
        hold_peak = self._hold(prompt)

        received = {
            "sampling_parameters": params,
            "n": params.get("n"),
            "exclude_input_in_output": None if exclude is None else bool(exclude),
            "stream": None if stream is None else bool(stream),
            "image_count": len(images),
            "image_bytes": sum(len(image) for image in images),
            "image_sha256": [hashlib.sha256(image).hexdigest() for image in images],
            "prompt_chars": len(prompt),
            "slow_in_flight": slow_in_flight,
            "hold_peak": hold_peak,
        }
        texts = [(prompt + a if prepend else a) for a in _answers(prompt, params, received)]
        output = pb_utils.Tensor(
            "text_output", np.array([t.encode("utf-8") for t in texts], dtype=np.object_)
        )
        return pb_utils.InferenceResponse(output_tensors=[output])

    def _stall(self, sender: Any) -> None:
        """Waits STALL_S, ending early when the client cancels (as vLLM aborts) or the server stops."""
        deadline = time.monotonic() + STALL_S
        while time.monotonic() < deadline:
            if self._stop.wait(0.1):
                raise RuntimeError("server shutting down")
            if sender.is_cancelled():
                raise RuntimeError("request cancelled by the client")

    def _slow(self, prompt: str) -> int | None:
        """For ``[[slow]]`` prompts: waits SLOW_S and returns the most such requests seen running at once."""
        if "[[slow]]" not in prompt:
            return None
        with self._lock:
            self._slow_in_flight += 1
            most = self._slow_in_flight
        try:
            # Sampling the count again at the end catches requests that started while this one waited.
            self._stop.wait(SLOW_S)
            with self._lock:
                return max(most, self._slow_in_flight)
        finally:
            with self._lock:
                self._slow_in_flight -= 1

    def _hold(self, prompt: str) -> int | None:
        """For ``[[hold]]`` prompts: waits until HOLD_COUNT of them wait at once (HOLD_MAX_S at most) and
        returns the most seen at once since the first of them arrived (reset when none is waiting)."""
        if "[[hold]]" not in prompt:
            return None
        end = time.monotonic() + HOLD_MAX_S
        with self._hold_full:
            self._holding += 1
            self._hold_peak = max(self._hold_peak, self._holding)
            self._hold_full.notify_all()
            try:
                while self._hold_peak < HOLD_COUNT and not self._stop.is_set():
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    self._hold_full.wait(min(left, 0.1))
                return self._hold_peak
            finally:
                self._holding -= 1
                if self._holding == 0:
                    self._hold_peak = 0

    def finalize(self) -> None:
        # Wake stalled requests so the server can shut down without waiting out STALL_S.
        self._stop.set()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5.0)
