"""Generic ndarray kernels shared by the solvers and the simulator: zeroing, slot copies, and
moves between torch tensors and slotted buffers.

A *slotted* buffer has shape ``(slots, B, N, ...)``: a leading slot axis (ring buffer, tape or
checkpoint index), then the batch axis B, then the item axis N (particles, nodes). Every kernel
takes ndarray arguments, so it compiles once per element type and serves every scene.
"""

import numpy as np
import taichi as ti

from engine import runtime

ndarray = ti.types.ndarray


@ti.kernel
def zero_array(arr: ndarray()):
    """arr = 0 for an ndarray of any shape (Taichi's ``Ndarray.fill`` builds a Python Matrix on
    every call for vector/matrix elements, which cost more than a small scene's kernels)."""
    for I in ti.grouped(arr):
        arr[I] = ti.zero(arr[I])


@ti.kernel
def copy_slot(src: ndarray(), s_src: ti.i32, dst: ndarray(), s_dst: ti.i32):
    """dst[s_dst] = src[s_src] for one slotted particle buffer."""
    for b, p in ti.ndrange(src.shape[1], src.shape[2]):
        dst[s_dst, b, p] = src[s_src, b, p]


def _make_transfers(element):
    """Kernels moving one slot of a slotted buffer to/from a (B, N, ...) array of ``element``
    (a torch tensor or ndarray), for element = vec3, mat3, or None for scalars."""
    side = ndarray(ndim=2) if element is None else ndarray(dtype=element, ndim=2)

    @ti.kernel
    def read_slot(src: ndarray(), s: ti.i32, dst: side):
        for b, p in ti.ndrange(src.shape[1], src.shape[2]):
            dst[b, p] = src[s, b, p]

    @ti.kernel
    def write_slot(src: side, dst: ndarray(), s: ti.i32):
        for b, p in ti.ndrange(dst.shape[1], dst.shape[2]):
            dst[s, b, p] = src[b, p]

    @ti.kernel
    def add_to_slot(src: side, dst: ndarray(), s: ti.i32):
        for b, p in ti.ndrange(dst.shape[1], dst.shape[2]):
            dst[s, b, p] = dst[s, b, p] + src[b, p]

    return read_slot, write_slot, add_to_slot


_TRANSFERS: dict = {}


def transfers(trailing: tuple[int, ...]):
    """(read_slot, write_slot, add_to_slot) kernels for tensors (B, N, *trailing), trailing in
    (), (3,), (3, 3). Built lazily: element types must be created after ti.init so that they
    carry the runtime's float precision."""
    if trailing not in _TRANSFERS:
        real = runtime.real_dtype()
        element = {(): None, (3,): ti.types.vector(3, real), (3, 3): ti.types.matrix(3, 3, real)}[trailing]
        _TRANSFERS[trailing] = _make_transfers(element)
    return _TRANSFERS[trailing]


def np_real():
    """The numpy float type of the runtime's precision."""
    return np.float64 if runtime.require().precision == "f64" else np.float32


def upload(value, dtype, element=None):
    """A Taichi ndarray holding the numpy array ``value``: real arrays (``dtype`` the runtime's
    float type) in the runtime's precision, others as int32; ``element`` a vector/matrix type
    whose shape the trailing axes of ``value`` give."""
    value = np.ascontiguousarray(value)
    real = runtime.real_dtype()
    shape = value.shape if element is None else value.shape[: value.ndim - len(element.get_shape())]
    arr = ti.ndarray(dtype if element is None else element, shape)
    arr.from_numpy(value.astype(np_real() if dtype is real else np.int32))
    return arr
