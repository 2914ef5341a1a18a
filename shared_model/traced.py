"""The scoring step as recorded TorchScript graphs: the model without Python in the loop.

An eager ``score`` runs a few hundred small ops, each dispatched from Python with the GIL
held. ``TracedScorer`` records ``RankerModel.score_batched`` once with ``torch.jit.trace`` and
replays the graph in C++: the per-op Python cost goes, and the GIL is released for the whole
step, so two inference threads score two batches side by side instead of taking turns at
every op boundary.

    scorer = TracedScorer(model)
    probs = scorer.score(events, ctx, cands, upstream)        # (N, 2), as inference.score
    per_request = scorer.score_many([(events, ctx, cands, upstream), ...])

A trace records the ops that ran, with sizes kept symbolic where they flow from tensor
shapes, and with every Python branch fixed the way it went. The model branches on a few
facts about the batch's shape, and nothing else; a graph is recorded per combination of them
(``signature``) and replayed for every batch that shares it, whatever its G, N and T:

- one user or several (G == 1: user-side tensors broadcast; else they repeat per row);
- one candidate per user or more (M == 1: user and candidate rows coincide);
- for each pyramid level that keeps k > 0 events, whether the history is shorter than k;
- whether the history holds padding (the prefix mask) and the autocast dtype.

The levels keep fewer events the deeper they are, so a history falls short of none of them,
of the first few or of all: at most 2 * 2 * (levels + 1) * 2 graphs per dtype (24 for the
online model's two levels), each recorded the first time its case is scored (about 0.3 s for
the online model; the ranker records the common ones at warm-up). TorchScript's profiling
executor profiles a graph's first run and builds its optimised plan on the next, tens of ms
for the online model; a new graph is run that many times on the batch that recorded it
(``executor_ready``), so no request that replays it pays for that. Batches with no candidate
or no history take the eager path. The eager ``RankerModel.score_batched`` stays the
reference: the parity test (tests/shared_model/test_traced.py) replays one graph per case on
batches of other sizes.

A graph holds the weights it was recorded with (and the absorbed-MLA folded products as
constants): record a new scorer after changing them. On the CPU a float32 graph is then frozen
and optimised for inference (``for_inference``); ``optimize=False`` keeps it as recorded.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import fields

import torch
from torch import nn

from shared_model.features import Candidates, Context, EventBatch, UpstreamFeature
from shared_model.inference import autocast_context
from shared_model.modules.mla import AttnImpl
from shared_model.ranker import Batch, RankerModel, batch_requests

Request = tuple[EventBatch, Context, Candidates, UpstreamFeature]
Signature = tuple[bool, bool, tuple[bool, ...], bool, str]

# Runs after which the profiling executor serves a graph from its optimised plan: it profiles
# the first ``num_profiled_runs`` (1 by default) and builds the plan on the next.
_get_profiled_runs = getattr(torch._C, "_jit_get_num_profiled_runs", lambda: 1)

_PARTS = (EventBatch, Context, Candidates, UpstreamFeature)  # Batch.inputs, in order


def flatten(batch: Batch) -> tuple[torch.Tensor, ...]:
    """A batch's inputs as the flat tensor tuple a recorded graph takes (dataclass field order)."""
    return tuple(getattr(part, f.name) for part in batch.inputs for f in fields(part))


def _unflatten(tensors: Sequence[torch.Tensor]) -> list:
    parts, i = [], 0
    for cls in _PARTS:
        n = len(fields(cls))
        parts.append(cls(*tensors[i : i + n]))
        i += n
    return parts


class _FlatStep(nn.Module):
    """``score_batched`` over flat tensors -> probabilities (G * M, 2), float32."""

    def __init__(self, model: RankerModel, padded: bool, impl: AttnImpl) -> None:
        super().__init__()
        self.model, self.padded, self.impl = model, padded, impl

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        logits = self.model.score_batched(*_unflatten(tensors), self.padded, self.impl)
        return torch.sigmoid(logits.float())


def signature(model: RankerModel, batch: Batch, autocast_dtype: torch.dtype | None) -> Signature:
    """The facts about a batch's shape that the model's Python branches read (see above)."""
    G, T = batch.events.shape
    short = tuple(k > T for k in model.cfg.pyramid if k > 0)  # history shorter than k
    return (G == 1, batch.M == 1, short, batch.padded, str(autocast_dtype))


def executor_ready(graph: torch.jit.ScriptModule) -> bool:
    """Whether TorchScript's executor has built the graph's optimised plan (its debug state
    exists only once it has), so that the next run pays no profiling or compilation."""
    try:
        graph.get_debug_state()
    except RuntimeError:
        return False
    return True


def for_inference(graph: torch.jit.ScriptModule) -> nn.Module:
    """A recorded float32 CPU graph, frozen (weights and the folded products become constants
    the passes can fold) and put through ``torch.jit.optimize_for_inference`` (Linear weights
    prepacked for oneDNN, pointwise ops fused): the same answers within float rounding, the
    online model's step 5-22% faster on one core in runs on one machine
    (docs/benchmarks/scoring-xeon-amx.md), and
    ~20 MiB more memory per graph, its prepacked weights. A torch whose passes fail keeps the
    graph as recorded, with a warning."""
    try:
        return torch.jit.optimize_for_inference(torch.jit.freeze(graph.eval()))
    except Exception as e:
        warnings.warn(f"cannot optimise the recorded scoring step ({e!r})", stacklevel=2)
        return graph


class TracedScorer:
    """Scores with a recorded graph per shape case; the same answers as the eager model.

    Args:
        model: an eval-mode ``RankerModel`` (its weights as they will be served).
        impl: the attention form recorded (the serving path's absorbed MLA by default).
        optimize: freeze each float32 CPU graph and apply TorchScript's inference passes
            (``for_inference``); False replays the graphs as recorded.
        ready: run each new graph on the batch that recorded it until the executor has built
            its plan (``executor_ready``); False leaves that to the first replays, the
            reference.
    """

    def __init__(
        self,
        model: RankerModel,
        impl: AttnImpl = "absorbed",
        optimize: bool = True,
        ready: bool = True,
    ) -> None:
        self.model, self.impl, self.optimize, self.ready = model, impl, optimize, ready
        self._graphs: dict[Signature, nn.Module] = {}  # a ScriptModule, or the eager step
        self._lock = threading.Lock()
        self.record_s = 0.0  # time spent recording graphs so far

    @property
    def graphs(self) -> int:
        """Graphs recorded so far."""
        return len(self._graphs)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def score(
        self,
        events: EventBatch,
        ctx: Context,
        cands: Candidates,
        upstream: UpstreamFeature,
        autocast_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """One user, N candidates -> probabilities (N, 2), as ``inference.score(shared=True)``."""
        return self.score_many([(events, ctx, cands, upstream)], autocast_dtype)[0]

    @torch.inference_mode()
    def score_many(
        self, requests: Sequence[Request], autocast_dtype: torch.dtype | None = None
    ) -> list[torch.Tensor]:
        """Several requests in one batch -> each request's probabilities (N_i, 2), as
        ``inference.score_many``."""
        if not requests:
            return []
        device = self._device()
        moved = [tuple(x.to(device) for x in r) for r in requests]
        batch = batch_requests(moved)
        if batch.M == 0 or batch.events.shape[1] == 0:  # nothing to record a graph for
            with autocast_context(device, autocast_dtype):
                logits = self.model.score_many(moved, self.impl)
            return [torch.sigmoid(x.float()) for x in logits]
        flat = flatten(batch)
        key = signature(self.model, batch, autocast_dtype)
        graph = self._graph(key, batch, flat, autocast_dtype)
        if isinstance(graph, torch.jit.ScriptModule):
            # A graph recorded under autocast holds its casts: replayed outside it, it computes
            # what the eager step computes (inside it, TorchScript's own autocast pass would
            # cast again and change the rounding).
            return batch.split(graph(*flat))
        with autocast_context(device, autocast_dtype):  # the eager step, where tracing failed
            return batch.split(graph(*flat))

    def _graph(
        self,
        key: Signature,
        batch: Batch,
        flat: tuple[torch.Tensor, ...],
        autocast_dtype: torch.dtype | None,
    ):
        if key in self._graphs:
            return self._graphs[key]
        with self._lock:  # one recording per case, even with several inference threads
            if key not in self._graphs:
                start = time.perf_counter()
                optimize = self.optimize and key[-1] == "None" and self._device().type == "cpu"
                self._graphs[key] = self._record(batch, flat, optimize, autocast_dtype)
                self.record_s += time.perf_counter() - start
        return self._graphs[key]

    def _record(
        self,
        batch: Batch,
        flat: tuple[torch.Tensor, ...],
        optimize: bool,
        autocast_dtype: torch.dtype | None,
    ):
        step = _FlatStep(self.model, batch.padded, self.impl)
        with warnings.catch_warnings(), autocast_context(self._device(), autocast_dtype):
            # the tracer's notes on the branches above, and its deprecation notice
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                graph = torch.jit.trace(step, flat, check_trace=False)
            except Exception as e:  # a torch whose tracer cannot record it: run that eagerly
                warnings.warn(
                    f"cannot record the scoring step ({e!r}); scoring eagerly", stacklevel=2
                )
                return step
            graph = for_inference(graph) if optimize else graph
        # Outside autocast, as score_many replays it: profile, then build the plan.
        for _ in range(_get_profiled_runs() + 1 if self.ready else 0):
            graph(*flat)
        return graph
