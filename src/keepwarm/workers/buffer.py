"""A worker's shared tensor buffer: an anonymous shared memory file (``memfd``), mapped by
the server and by the worker, reused by every call.

Nothing has a name on disk, so nothing can be left behind: the memory goes when the last
process that maps it closes it (a killed worker included). A buffer that is too small is
replaced by a larger one, whose file descriptor is passed over the control socket
(``send_buffer`` / ``receive_buffer``, SCM_RIGHTS).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import socket
from collections.abc import Mapping, Sequence

import numpy as np

from keepwarm.workers.messages import TensorRef

_ALIGN = 64  # every tensor starts on a cache line


class SharedBuffer:
    """``size`` bytes of shared memory, from a new memfd or one received (``fd``)."""

    def __init__(self, size: int, fd: int | None = None) -> None:
        if fd is None:
            fd = os.memfd_create("keepwarm-worker-buffer", os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, size)
            except OSError:
                os.close(fd)
                raise
        self.fd = fd
        self.size = size
        self.map = mmap.mmap(fd, size)

    def close(self) -> None:
        """Let go of the buffer. While arrays over it are alive (a model kept its inputs),
        the mapping stays until they are gone; the descriptor is closed at once."""
        with contextlib.suppress(BufferError):  # unmapped when the last array goes
            self.map.close()
        os.close(self.fd)

    def view(self, ref: TensorRef) -> np.ndarray:
        """The tensor ``ref`` describes, as an array over the buffer (no copy)."""
        if ref.inline is not None:
            return ref.inline
        array: np.ndarray = np.frombuffer(
            self.map, dtype=np.dtype(ref.dtype), count=_count(ref.shape), offset=ref.offset
        ).reshape(ref.shape)
        return array

    def copy_out(self, ref: TensorRef) -> np.ndarray:
        """The tensor ``ref`` describes, copied out (the buffer is reused by the next call)."""
        if ref.inline is not None:
            return ref.inline
        return self.view(ref).copy()

    def write(self, layout: Sequence[TensorRef], arrays: Mapping[str, np.ndarray]) -> None:
        """Copy ``arrays`` into the places ``layout`` gives them."""
        for ref in layout:
            if ref.inline is None and ref.nbytes:
                target = self.view(ref)
                np.copyto(target, arrays[ref.name], casting="no")


def layout(arrays: Mapping[str, np.ndarray], start: int = 0) -> tuple[tuple[TensorRef, ...], int]:
    """Where each array goes in a buffer, from ``start``; and the end of the last one.
    Arrays of Python objects (text) are carried in the message itself."""
    refs = []
    offset = _aligned(start)
    for name, array in arrays.items():
        if array.dtype.hasobject:
            refs.append(TensorRef(name, "O", tuple(array.shape), inline=array))
            continue
        refs.append(TensorRef(name, array.dtype.str, tuple(array.shape), offset, array.nbytes))
        offset = _aligned(offset + array.nbytes)
    return tuple(refs), offset


def grown(current: int, needed: int) -> int:
    """The size of a buffer that replaces one of ``current`` bytes to hold ``needed``."""
    size = max(current, 1)
    while size < needed:
        size *= 2
    return size


def send_buffer(sock: socket.socket, buffer: SharedBuffer) -> None:
    socket.send_fds(sock, [buffer.size.to_bytes(8, "little")], [buffer.fd])


def receive_buffer(sock: socket.socket) -> SharedBuffer:
    data, fds, _flags, _address = socket.recv_fds(sock, 8, 1)
    if len(data) != 8 or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise ConnectionError("expected a shared buffer on the control socket")
    return SharedBuffer(int.from_bytes(data, "little"), fds[0])


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def _count(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count
