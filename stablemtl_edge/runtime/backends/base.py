"""One life cycle for every inference engine (the Polygraphy runner shape).

A runner wraps one component (``encoder``, ``unet``, ``unet_main``, ``decoder``) of one precision.
``activate`` does the slow work (open the session, deserialize the engine), ``infer`` runs a feed dict,
``deactivate`` releases everything; runners are context managers. Input metadata comes from the
manifest, and inputs are checked against it on the first call and whenever their shapes change, so the
steady state pays nothing for the check. The scheduler only ever sees this interface.

Observers (:meth:`BaseRunner.add_observer`) see every feed a runner is given: int8 calibration records
the inputs each component really receives by running the pipeline itself, without a second scheduler.
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

import numpy as np

from ...errors import StableMTLError
from ...artifact.manifest import ComponentEntry, TensorSpec
from ...records import KeyEnum

__all__ = ["Backend", "BaseRunner", "FeedObserver"]

#: Called with the runner's manifest record and the validated feed, before the engine runs. The arrays
#: may be the scheduler's reusable buffers: an observer that keeps them must copy them.
FeedObserver = Callable[[ComponentEntry, Mapping[str, np.ndarray]], None]


class Backend(KeyEnum):
    """Inference engine. ``auto`` picks native TensorRT when it is installed and engines are cached;
    ``triton`` sends frames to a Triton Inference Server, which runs the whole schedule (no runners here)."""

    AUTO = "auto"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"
    TRITON = "triton"


class BaseRunner(ABC):
    """Runs one exported component.

    Subclasses implement :meth:`activate_impl`, :meth:`infer_impl` and :meth:`deactivate_impl`; the public
    methods keep the bookkeeping (active flag, input checks, timing).

    Args:
        entry: the component's manifest record (file, I/O names, dtypes, shapes).
        name: a label for messages; defaults to ``<component>/<precision>``.
    """

    def __init__(self, entry: ComponentEntry, name: str | None = None) -> None:
        self.entry = entry
        self.name = name or f"{entry.component.value}/{entry.precision.value}"
        self.is_active = False
        self.last_inference_time = 0.0  # seconds spent in the last infer_impl
        self._inputs = {t.name: t for t in entry.inputs}
        self._dtypes = {t.name: np.dtype(t.dtype) for t in entry.inputs}
        self._checked: tuple | None = None
        self._observers: list[FeedObserver] = []

    # -- observers ---------------------------------------------------------------------------------------
    def add_observer(self, observer: FeedObserver) -> None:
        """Have ``observer`` called with every feed of :meth:`infer` (after the input check)."""
        self._observers.append(observer)

    def remove_observer(self, observer: FeedObserver) -> None:
        """Stop calling ``observer``; unknown observers are ignored."""
        if observer in self._observers:
            self._observers.remove(observer)

    # -- metadata ----------------------------------------------------------------------------------------
    def get_input_metadata(self) -> dict[str, TensorSpec]:
        """Input name -> spec; symbolic dimensions are strings (``"batch"``)."""
        return dict(self._inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.entry.outputs)

    def describe(self) -> str:
        """Which engine and device really run this component (for logs and ``stablemtl-doctor``)."""
        return f"{type(self).__name__}({self.name})"

    # -- life cycle --------------------------------------------------------------------------------------
    def activate(self) -> None:
        if self.is_active:
            warnings.warn(f"runner {self.name} is already active; activate() ignored", RuntimeWarning, stacklevel=2)
            return
        self.activate_impl()
        self.is_active = True

    def deactivate(self) -> None:
        if not self.is_active:
            return
        try:
            self.deactivate_impl()
        finally:
            self.is_active = False
            self._checked = None

    def __enter__(self) -> BaseRunner:
        self.activate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deactivate()

    def __del__(self) -> None:
        if getattr(self, "is_active", False):
            warnings.warn(f"runner {self.name} was never deactivated", ResourceWarning, stacklevel=1)

    # -- inference ---------------------------------------------------------------------------------------
    def infer(
        self,
        feed: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
        check_inputs: bool = True,
    ) -> dict[str, np.ndarray]:
        """Run the component.

        Args:
            feed: input name -> array, matching :meth:`get_input_metadata`.
            output_names: the outputs wanted (default: all).
            check_inputs: validate names, dtypes and shapes (only when the shapes changed since the last
                validated call).

        Returns:
            Output name -> array. A backend may reuse output buffers: an array is valid until the next
            ``infer`` on the same runner, copy it to keep it longer.
        """
        if not self.is_active:
            raise StableMTLError(f"runner {self.name} is not active: call activate() or use it in a `with` block")
        if check_inputs:
            signature = tuple((k, v.shape, v.dtype) for k, v in feed.items())
            if signature != self._checked:
                self._check(feed)
                self._checked = signature
        for observer in self._observers:
            observer(self.entry, feed)
        start = time.perf_counter()
        out = self.infer_impl(feed, tuple(output_names) if output_names is not None else self.output_names)
        self.last_inference_time = time.perf_counter() - start
        return out

    def _check(self, feed: Mapping[str, np.ndarray]) -> None:
        missing = [n for n in self._inputs if n not in feed]
        extra = [n for n in feed if n not in self._inputs]
        if missing or extra:
            raise StableMTLError(
                f"{self.name}: inputs {sorted(feed)} do not match the graph's {sorted(self._inputs)} "
                f"(missing {missing}, unexpected {extra})"
            )
        symbols: dict[str, int] = {}
        for name, spec in self._inputs.items():
            x = feed[name]
            if x.dtype != self._dtypes[name]:
                raise StableMTLError(f"{self.name}: input `{name}` must be {spec.dtype}, got {x.dtype}")
            if x.ndim != len(spec.shape):
                raise StableMTLError(f"{self.name}: input `{name}` must have shape {spec.shape}, got {x.shape}")
            for got, want in zip(x.shape, spec.shape):
                if isinstance(want, str):
                    if symbols.setdefault(want, got) != got:
                        raise StableMTLError(
                            f"{self.name}: dimension `{want}` is {symbols[want]} in one input and {got} in "
                            f"`{name}` {x.shape}"
                        )
                elif want >= 0 and got != want:
                    raise StableMTLError(f"{self.name}: input `{name}` must have shape {spec.shape}, got {x.shape}")

    # -- backend hooks -----------------------------------------------------------------------------------
    @abstractmethod
    def activate_impl(self) -> None:
        """Load the model (session, engine, buffers)."""

    @abstractmethod
    def infer_impl(self, feed: Mapping[str, np.ndarray], output_names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Run on validated inputs and return the requested outputs."""

    @abstractmethod
    def deactivate_impl(self) -> None:
        """Release what :meth:`activate_impl` acquired."""
