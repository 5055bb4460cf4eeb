"""Device mesh ('data', 'fsdp', 'tensor'), the logical-axis rules, and placement helpers.

One table (`RULES`) maps the logical axis names that parameters carry to mesh axes. A mesh
axis is used at most once per array, and a dimension that the mesh axis size does not divide
stays replicated, so every family and every tiny test config can be placed on any mesh.
Batches are split over ('data', 'fsdp') on their leading axis.

Every command builds one mesh over all global devices from the `mesh:` config section
(`session.command_mesh`) and makes it current (`set_current`); the training driver places
parameters, optimizer state, reference parameters and batches on it (`place_params`,
`place_batch`); with several processes the statistics run on it too (`stats_mesh`). With
several processes, the batches of `finetune` and of every `unlearn` method's dataset, built
with `PipelineConfig.rows = process_rows(mesh, batch_size)`, hold this process's rows only
(`ProcessRows`, assembled with `jax.make_array_from_process_local_data`); any other host
batch is the same global batch in every process, each contributing the rows of its own
devices (`jax.make_array_from_callback`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (None = replicated)
RULES: dict[str, str | None] = {
    "embed": "fsdp",
    "embed_out": None,
    "mlp": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "vocab": "tensor",
    "norm": None,
}


def mesh_shape(sizes: Mapping[str, int], n_devices: int) -> tuple[int, int, int]:
    """Resolve sizes with at most one -1 ('the rest') against the device count."""
    unknown = [k for k in sizes if k not in MESH_AXES]
    if unknown:
        raise ValueError(f"unknown mesh axis {unknown[0]!r}; axes are {MESH_AXES}")
    dims = [int(sizes.get(a, 1)) for a in MESH_AXES]
    if dims.count(-1) > 1:
        raise ValueError("at most one mesh axis may be -1")
    known = int(np.prod([d for d in dims if d != -1]))
    if -1 in dims:
        if n_devices % known:
            raise ValueError(f"mesh {dict(zip(MESH_AXES, dims))} does not divide "
                             f"{n_devices} devices")
        dims[dims.index(-1)] = n_devices // known
    if int(np.prod(dims)) != n_devices:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, dims))} needs {int(np.prod(dims))} devices "
                         f"but {n_devices} are available; use -1 for one axis")
    return tuple(dims)


_CURRENT: dict[str, Mesh | None] = {"mesh": None}


def set_current(mesh: Mesh | None) -> None:
    """Make `mesh` the mesh that training and statistics place their arrays on."""
    _CURRENT["mesh"] = mesh


def current() -> Mesh | None:
    """The command's mesh (None: library use without a mesh, arrays on the default device)."""
    return _CURRENT["mesh"]


def mesh_from_config(sizes: Mapping[str, int], devices=None) -> Mesh:
    """The ('data', 'fsdp', 'tensor') mesh of the `mesh:` config section over all global
    devices; a shape that does not match the device count is one error naming both."""
    import jax

    devices = jax.devices() if devices is None else devices
    try:
        return make_mesh(sizes, devices)
    except ValueError as e:
        shown = ", ".join(f"{k}={v}" for k, v in sizes.items())
        raise ValueError(f"mesh: {shown} does not fit the {len(devices)} device(s) of this run "
                         f"({jax.process_count()} process(es) x {jax.local_device_count()} "
                         f"local device(s)): {e}; set mesh.data / mesh.fsdp / mesh.tensor so "
                         "their product is the device count (-1 for one axis: the rest)") from e


def make_mesh(sizes: Mapping[str, int] | None = None, devices=None) -> Mesh:
    """A ('data', 'fsdp', 'tensor') mesh; default: all devices on 'data'."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(sizes or {"data": -1}, len(devices))
    auto = (AxisType.Auto,) * len(MESH_AXES)
    if list(devices) == list(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=auto)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


def logical_to_spec(axes: tuple, shape: tuple, mesh: Mesh, rules: Mapping = RULES) -> P:
    """PartitionSpec for one array from its logical axis names."""
    used, spec = set(), []
    for name, dim in zip(axes, shape):
        mesh_axis = rules.get(name) if name is not None else None
        if (mesh_axis is None or mesh_axis in used or mesh.shape[mesh_axis] == 1
                or dim % mesh.shape[mesh_axis]):
            spec.append(None)
        else:
            spec.append(mesh_axis)
            used.add(mesh_axis)
    return P(*spec)


def param_shardings(params: Mapping[str, Any], logical_axes: Mapping[str, tuple], mesh: Mesh,
                    rules: Mapping = RULES) -> dict[str, NamedSharding]:
    """NamedSharding per parameter (unknown paths, e.g. LoRA factors, are replicated unless
    their logical axes are given)."""
    out = {}
    for k, v in params.items():
        axes = logical_axes.get(k, (None,) * len(v.shape))
        out[k] = NamedSharding(mesh, logical_to_spec(axes, tuple(v.shape), mesh, rules))
    return out


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def _rows_spec(mesh: Mesh, shape: tuple) -> P:
    """Rows over ('data', 'fsdp') when they divide the leading axis, else replicated."""
    rows = mesh.shape["data"] * mesh.shape["fsdp"]
    if not shape or rows == 1 or shape[0] % rows:
        return P()
    return P(("data", "fsdp"), *([None] * (len(shape) - 1)))


def global_array(value: Any, sharding: NamedSharding) -> jax.Array:
    """A global array from the same host value held by every process (each process supplies
    the shards of its own devices)."""
    value = np.asarray(value)
    if jax.process_count() == 1:
        return jax.device_put(value, sharding)
    return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])


class LocalUnits:
    """This process's image units (Qwen-VL patches, OneVision crops) of a batch-wide entry of
    a `ProcessRows` batch, in place of the global array of `shape` until `place_batch` joins
    every process's (`join`). `block` holds the units of this process's images, which start
    at unit `offset` of the global layout (images in row order, `total` real units, zeros
    after them); it is sent zero-padded to `capacity` units (the same in every process: one
    static shape). The join is a collective: every process joins the same batches in the
    same order, in the thread that places them (never in data-loading threads)."""

    def __init__(self, block: np.ndarray, offset: int, capacity: int, total: int,
                 shape: tuple, dtype: Any):
        if len(block) > capacity:
            raise ValueError(f"this process's {len(block)} image units exceed the capacity "
                             f"{capacity} of one process's block")
        self.block, self.offset, self.capacity, self.total = block, offset, capacity, total
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __array__(self, *args, **kwargs):
        raise TypeError("this batch entry holds this process's image units only; join every "
                        "process's first (parallel.mesh.place_batch)")

    def sent(self) -> dict[str, np.ndarray]:
        """What this process contributes to the gather."""
        padded = np.zeros((self.capacity, *self.shape[1:]), self.dtype)
        padded[:len(self.block)] = self.block
        return {"units": padded, "span": np.asarray([self.offset, len(self.block)], np.int64)}

    def join(self, gather: Callable[[Any], Any] | None = None) -> np.ndarray:
        """The global array: every process's `sent()` joined by `gather` (default
        `jax.experimental.multihost_utils.process_allgather`: stacked [processes, ...]), each
        block placed by its span. The blocks must tile units [0, total) exactly."""
        if gather is None:
            from jax.experimental.multihost_utils import process_allgather as gather
        got = gather(self.sent())
        spans = np.asarray(got["span"]).reshape(-1, 2)
        out = np.zeros(self.shape, self.dtype)
        end = 0
        for (start, count), units in sorted(zip(spans.tolist(), np.asarray(got["units"])),
                                            key=lambda su: su[0][0]):
            if not count:
                continue
            if start != end:  # a gap or an overlap
                end = -1
                break
            out[start:start + count] = units[:count]
            end += count
        if end != self.total:
            raise ValueError(f"the processes' image units {sorted(spans.tolist())} (offset, "
                             f"count) do not tile the batch's {self.total} units; every process "
                             "must read its rows of the same global batch")
        return out


class ProcessRows(dict):
    """A batch holding only this process's rows `[start, stop)` of a global batch of `rows`
    rows (`data.pipeline.PipelineConfig.rows`): `place_batch` assembles the global arrays
    from every process's rows (`jax.make_array_from_process_local_data`). Entries not indexed
    by row (`modeling.model.shared_input_keys`) are whole, the same in every process, but for
    the image units of Qwen-VL / OneVision batches (`LocalUnits`: this process's images)."""

    def __init__(self, entries: Mapping[str, Any], start: int, stop: int, rows: int):
        super().__init__(entries)
        self.start, self.stop, self.rows = start, stop, rows


def same_rows(batch: Mapping[str, Any], entries: Mapping[str, Any]) -> dict:
    """`entries` (derived from `batch`, row for row) as the same kind of batch: this
    process's rows of the same global batch when `batch` is a `ProcessRows`."""
    if isinstance(batch, ProcessRows):
        return ProcessRows(entries, batch.start, batch.stop, batch.rows)
    return dict(entries)


def batch_rows(batch: Mapping[str, Any]) -> tuple[int, int]:
    """(rows this process read, rows of the global batch) of a host batch."""
    local = int(np.shape(batch["input_ids"])[0])
    return local, batch.rows if isinstance(batch, ProcessRows) else local


class RowCount:
    """Rows of the global batches this process read during one pass over a dataset: what a
    statistics pass logs with several processes (each process reads its share only)."""

    def __init__(self) -> None:
        self.local = self.total = self.batches = 0

    def add(self, batch: Mapping[str, Any]) -> None:
        local, total = batch_rows(batch)
        self.local, self.total, self.batches = (self.local + local, self.total + total,
                                                self.batches + 1)

    def log(self, name: str) -> None:
        """One stderr line `stats NAME: read R of G rows (B batches) in process i of N`
        (several processes only)."""
        import sys

        if jax.process_count() > 1:
            print(f"stats {name.removeprefix('stats ')}: read {self.local} of {self.total} "
                  f"rows ({self.batches} batches) in process {jax.process_index()} of {jax.process_count()}",
                  file=sys.stderr, flush=True)


def stats_mesh(mesh: Mesh | None = None) -> Mesh | None:
    """The mesh a statistics pass runs on: `mesh` when given; else, with several processes,
    the command's mesh (`current()`: one SPMD computation over the global batch, each process
    reading its rows); else None (one device, as a single process computes them)."""
    if mesh is not None or jax.process_count() == 1:
        return mesh
    return current()


def dataset_rows(batch_size: int) -> tuple[int, int] | None:
    """`PipelineConfig.rows` for a dataset of global batches of `batch_size` rows: this
    process's rows on the command's mesh (several processes), else None (whole batches)."""
    mesh = current()
    return None if mesh is None else process_rows(mesh, batch_size)


def process_rows(mesh: Mesh, batch_size: int) -> tuple[int, int] | None:
    """The rows `[start, stop)` of every global batch that this process's devices hold on
    `mesh` (rows over ('data', 'fsdp')); None with one process, or when the rows do not
    divide the batch (replicated batches: every process needs all rows)."""
    if jax.process_count() == 1:
        return None
    spec = _rows_spec(mesh, (batch_size,))
    if spec == P():
        return None
    index = NamedSharding(mesh, spec).addressable_devices_indices_map((batch_size,))
    rows = sorted({i for idx in index.values() for i in range(*idx[0].indices(batch_size))})
    if rows != list(range(rows[0], rows[-1] + 1)):
        return None  # not one block: assemble from the global batch instead
    return rows[0], rows[-1] + 1


def place_batch(batch: Any, mesh: Mesh) -> Any:
    """A (nested) host batch on `mesh`: example rows over ('data', 'fsdp') (replicated when
    they do not divide), entries not indexed by row (`shared_input_keys`) replicated. A
    `ProcessRows` batch holds this process's rows only (and the whole shared entries, their
    `LocalUnits` joined here: a collective); every process passes its own."""
    from jaxunlearn.modeling.model import shared_input_keys

    if isinstance(batch, ProcessRows):
        sharding = NamedSharding(mesh, _rows_spec(mesh, (batch.rows,)))
        shared = set(shared_input_keys(batch)) if "input_ids" in batch else set()
        entries = {k: v.join() if isinstance(v, LocalUnits) else v for k, v in batch.items()}
        return {k: (global_array(v, NamedSharding(mesh, P())) if k in shared
                    else jax.make_array_from_process_local_data(
                        sharding, np.asarray(v), (batch.rows, *np.shape(v)[1:])))
                for k, v in entries.items()}
    if isinstance(batch, Mapping):
        shared = set(shared_input_keys(batch)) if "input_ids" in batch else set()
        return {k: (global_array(v, NamedSharding(mesh, P())) if k in shared
                    else place_batch(v, mesh)) for k, v in batch.items()}
    value = np.asarray(batch)
    return global_array(value, NamedSharding(mesh, _rows_spec(mesh, value.shape)))


def place_params(tree: Any, logical_axes: Mapping[str, tuple], mesh: Mesh,
                 rules: Mapping = RULES) -> Any:
    """Place a (nested) tree of parameter dicts on `mesh`: a leaf whose key is a model
    parameter path (with that parameter's rank) by the logical-axis rules, every other leaf
    (LoRA factors, masks, scalars) replicated."""
    def place(key, x):
        shape = tuple(np.shape(x))
        axes = logical_axes.get(key) if isinstance(key, str) else None
        spec = (logical_to_spec(axes, shape, mesh, rules) if axes is not None
                and len(axes) == len(shape) else P())
        sharding = NamedSharding(mesh, spec)
        if isinstance(x, jax.Array):
            if x.sharding == sharding:
                return x
            if jax.process_count() == 1 or not x.is_fully_addressable:
                return jax.device_put(x, sharding)
        return global_array(x, sharding)

    def walk(node, key=None):
        if isinstance(node, Mapping):
            return {k: walk(v, k) for k, v in node.items()}
        if node is None:
            return None
        return place(key, node)

    return walk(tree)
