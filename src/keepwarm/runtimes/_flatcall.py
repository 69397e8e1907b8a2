"""A TensorFlow concrete function called as one eager op, on numpy arrays.

Calling a concrete function the ordinary way (``fn(**tensors)``) spends most of its Python
time before the model runs: binding keyword arguments to the function's type, checking
for gradient tapes and distribution strategies, entering error-rewriting and
control-dependency contexts, building the call's attributes. ``FlatCall`` does that work
once, at load, and then runs the function as TensorFlow itself finally does: one
``TFE_Py_Execute`` of the function's op, with the inputs in the function's flat order
followed by its captured variables.

What the ordinary call checks and this one does not: nothing that keepwarm relies on.
``Signature.coerce`` checks names, dtypes, ranks and static sizes before any runtime sees
the inputs; TensorFlow's own call checks no shapes either (a structured call that does
not bind falls back to its flat call), and the runtime under both refuses a tensor of the
wrong dtype. Missing or extra inputs, and values that cannot become tensors, are refused
here with ``InvalidInputError``.

The call's attributes (TensorFlow's configuration for function calls) are read at load,
as the ordinary call reads them at each call: a configuration changed after a model
loaded (``tf.config.optimizer.set_experimental_options``, say) reaches it on its next load.
Profiler annotations and ``tf.debugging`` op callbacks for the call itself are skipped.

It uses TensorFlow's private API. ``FlatCall(...)`` raises ``NotFlat`` (the reason in
words) whenever that API is missing or the function is not one it can call flat: inputs
or outputs that are not plain dense tensors (composite, resource, variant), captures that
are not plain tensors (deferred or distributed variables), an order it cannot verify.
The runtime then keeps the ordinary call.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from keepwarm.errors import InvalidInputError, KeepwarmError
from keepwarm.runtimes._executor import SINGLE_THREADED, FirstCallChooses
from keepwarm.runtimes._inputslots import InputSlots
from keepwarm.signature import Signature

Call = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
_log = logging.getLogger("keepwarm.runtimes")


class NotFlat(Exception):
    """The function cannot be called flat; the message says why."""


class FlatCalled:
    """A model served through one TensorFlow concrete function: ``predict`` calls it flat
    when ``prefer_flat`` could build a ``FlatCall``, else through ``call_ordinary``."""

    signature: Signature
    call_path: str
    #: TensorFlow's executor for the flat call: "single-threaded", "default (why)", or
    #: "undecided" until the first call has run (see ``_executor``).
    tf_executor: str
    _call: Call

    def prefer_flat(
        self,
        fn: Any,
        order: Callable[[list[str]], Sequence[str]],
        executor: str = "single_threaded",
    ) -> None:
        """``order``: keepwarm's input names for ``fn``'s parameters in flat order (raising
        ``NotFlat`` when they do not correspond); ``executor``: the ``tf_executor`` option."""
        try:
            flat = FlatCall(fn, order(parameters(fn)), flat_outputs(fn.structured_outputs))
            single = flat.with_executor(SINGLE_THREADED)
        except NotFlat as exc:
            self._call = self.call_ordinary
            self.call_path = f"ordinary ({exc})"
            self.tf_executor = "default (the ordinary call)"
            _log.debug("%s is called the ordinary way: %s", type(self).__name__, exc)
            return
        self.call_path = "flat"
        if executor == "default":
            self._call = flat
            self.tf_executor = "default (tf_executor = 'default')"
        else:
            self._call = FirstCallChooses(single, flat, self._chosen)
            self.tf_executor = "undecided"

    def _chosen(self, call: Call, why: str) -> None:
        if isinstance(self._call, FirstCallChooses):  # not closed meanwhile
            self._call = call
        self.tf_executor = why

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return self._call(inputs)
        except KeepwarmError:
            raise
        except Exception:
            # Inputs that bypassed ``Signature.coerce`` and failed in TensorFlow: say which
            # input is wrong (InvalidInputError); a model's own error goes on as it is.
            self.signature.coerce(inputs)
            raise

    def call_ordinary(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class FlatCall:
    """Calls one concrete function on numpy arrays, returning numpy arrays by name.

    ``order``: keepwarm's input names in the function's flat argument order.
    ``outputs``: (output name, index among the function's flat outputs), in the order the
    ordinary call returns them.
    """

    __slots__ = (
        "_attrs",
        "_captures",
        "_context",
        "_convert",
        "_count",
        "_execute",
        "_fn",
        "_handle",
        "_n_outputs",
        "_not_ok",
        "_op",
        "_order",
        "_outputs",
        "_raise_status",
        "_slots",
    )

    def __init__(self, fn: Any, order: Sequence[str], outputs: Sequence[tuple[str, int]]) -> None:
        self._fn = fn  # keeps the function (and so its registered op) alive
        self._order = tuple(order)
        self._count = len(self._order)
        self._outputs = tuple(outputs)
        import tensorflow as tf

        try:
            from tensorflow.python import pywrap_tfe
            from tensorflow.python.eager import context, core
            from tensorflow.python.framework import ops

            ctx = context.context()
            ctx.ensure_initialized()
            atomic = fn._inference_function
            op = atomic.name
            captures = list(fn.captured_inputs)
            expected = len(atomic.cached_definition.signature.input_arg)
            options = ctx.function_call_options.as_attrs()
            specs = list(atomic.function_type.flat_outputs)
            deferred = any(callable(c) for c in fn._captured_inputs)
            self._context = ctx
            self._handle = ctx._handle
            self._execute = pywrap_tfe.TFE_Py_Execute
            self._convert = ops.EagerTensor
            self._not_ok = core._NotOkStatusException
            self._raise_status = core._status_to_exception
        except (ImportError, AttributeError, TypeError) as exc:
            raise NotFlat(f"TensorFlow's flat call API is missing: {exc!r}") from exc
        if deferred:
            raise NotFlat("the function has deferred captures")
        if not all(isinstance(c, ops.EagerTensor) for c in captures):
            raise NotFlat("the function captures values that are not plain tensors")
        if expected != self._count + len(captures):
            raise NotFlat(f"the function takes {expected} tensors, not {self._count} + captures")
        self._slots = InputSlots(self._convert)  # shared by ``with_executor``'s copies
        self._op = op.decode() if isinstance(op, bytes) else str(op)
        self._captures = captures
        self._attrs = tuple(x for item in options.items() for x in item)
        for spec in specs:
            if type(spec) is not tf.TensorSpec or spec.dtype in (tf.resource, tf.variant):
                raise NotFlat(f"output {spec!r} is not a plain dense tensor")
        self._n_outputs = len(specs)
        if not specs or sorted(i for _, i in self._outputs) != list(range(len(specs))):
            raise NotFlat("the function's outputs do not match its flat outputs")

    def with_executor(self, executor: str) -> FlatCall:
        """This call run by TensorFlow's ``executor`` (``SINGLE_THREADED``, or "" for its
        default): a copy with that ``executor_type`` call attribute."""
        attrs = list(self._attrs)
        keys = attrs[::2]
        if "executor_type" not in keys:
            raise NotFlat("TensorFlow's call attributes have no executor_type")
        attrs[2 * keys.index("executor_type") + 1] = executor
        other = copy.copy(self)
        other._attrs = tuple(attrs)
        return other

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        device = self._context.device_name
        tensor = self._slots.tensor  # small inputs refill a kept tensor: ``_inputslots``
        try:
            if len(inputs) != self._count:
                raise KeyError
            args = [tensor(inputs[name], device, i) for i, name in enumerate(self._order)]
        except (KeyError, ValueError, TypeError):
            raise self._explain(inputs) from None
        args += self._captures
        try:
            flat = self._execute(self._handle, device, self._op, args, self._attrs, self._n_outputs)
        except self._not_ok as exc:  # TensorFlow's own error type, as the ordinary call
            raise self._raise_status(exc) from None
        # ``numpy()`` copies, and must: an input is not copied into its tensor (an aligned
        # array is aliased), so an output that is an input (identity, reshape) would
        # otherwise hand back the caller's own memory, writable.
        return {name: flat[i].numpy() for name, i in self._outputs}

    def _explain(self, inputs: Mapping[str, Any]) -> InvalidInputError:
        missing = [n for n in self._order if n not in inputs]
        unknown = [n for n in inputs if n not in self._order]
        if missing or unknown:
            return InvalidInputError(
                f"inputs do not match the signature: missing {missing}, unexpected {unknown}"
            )
        device = self._context.device_name
        for name in self._order:
            try:
                self._convert(inputs[name], device, None)
            except (ValueError, TypeError) as exc:
                return InvalidInputError(f"input {name!r} cannot become a tensor: {exc}")
        return InvalidInputError("the inputs cannot become tensors")


def flat_outputs(structured: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(name, flat index) for a dict of outputs, in its own order: TensorFlow flattens a
    dict by sorted key, and this asks TensorFlow's flatten rather than assuming it."""
    import tensorflow as tf

    names = tf.nest.flatten({name: name for name in structured})
    if sorted(names) != sorted(structured):
        raise NotFlat("the outputs are not a flat dict of tensors")
    index = {name: i for i, name in enumerate(names)}
    return [(name, index[name]) for name in structured]


def parameters(fn: Any) -> list[str]:
    """``fn``'s parameter names in its flat argument order, each one dense tensor.

    ``NotFlat`` unless every parameter is one plain dense ``tf.TensorSpec`` (no composite,
    resource or variant; no nesting), all of one kind (so that TensorFlow's order, by kind,
    is the declared one), and the function's flat inputs are those specs in that order."""
    import tensorflow as tf

    try:
        declared = list(fn.function_type.parameters.values())
        flat = list(fn.function_type.flat_inputs)
    except AttributeError as exc:
        raise NotFlat(f"TensorFlow's function type API is missing: {exc!r}") from exc
    if len({p.kind for p in declared}) > 1:
        raise NotFlat("the function mixes positional and keyword parameters")
    specs = [p.type_constraint for p in declared]
    for spec in [*specs, *flat]:
        if type(spec) is not tf.TensorSpec or spec.dtype in (tf.resource, tf.variant):
            raise NotFlat(f"input {spec!r} is not a plain dense tensor")
    if specs != flat:
        raise NotFlat("the function's flat inputs are not its parameters in order")
    return [p.name for p in declared]
