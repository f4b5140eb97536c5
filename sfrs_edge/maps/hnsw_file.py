"""The hnswlib index file (``index.bin``), checked before hnswlib reads it.

hnswlib trusts its file: wrong sizes in the header, a link count above the maximum or a
neighbour id past the last element make it read out of bounds (a crash, not an exception).
The layout is hnswlib 0.8's ``HierarchicalNSW::saveIndex``:

- a header (:data:`HEADER`): offsets, element counts, sizes, max level, entry point, M, ...;
- level 0, ``count`` records of ``size_data_per_element`` bytes: the link count (uint16 in a
  uint32), ``maxM0`` neighbour ids (uint32), the vector (``dim`` float32) and the label (uint64);
- for every element, a uint32 byte size of its upper-level links (0 for level 0 only), then
  that many bytes: one block per level of a link count and ``maxM`` neighbour ids.

:func:`check_hnsw_header` (every open) compares the header with the manifest. :func:`check_graph`
(``map verify``, ``Map.open(verify="full")``) walks every link list: counts within the maximum,
ids within range, levels within the graph's, labels exactly the map's rows, the file's size
exactly what the lists add up to, and the vectors finite and unit length.
"""

from __future__ import annotations

import mmap
import os
import struct

import numpy as np

from ..errors import MapError
from .contents import check_vectors

HEADER = struct.Struct("<6QiI3QdQ")  # hnswlib 0.8 HierarchicalNSW::saveIndex
CHUNK_ROWS = 65536  # level-0 records checked at a time (bounded temporaries)


def check_hnsw_header(fd: int, dim: int, count: int, M: int, where: str) -> None:
    """Cheap sanity of an hnswlib index file against the manifest, before hnswlib reads it.

    hnswlib trusts its file: a header with wrong sizes makes it read out of bounds. This
    refuses headers that disagree with the map (element count, vector size, M, layout).
    """
    head = os.pread(fd, HEADER.size, 0)
    if len(head) != HEADER.size:
        raise MapError(f"{where}: index file is truncated; rebuild the map")
    (off0, max_el, cur, per_el, label_off, off_data, maxlevel, enter, maxm, maxm0, m, mult, efc) = (
        HEADER.unpack(head)
    )
    links0 = maxm0 * 4 + 4
    ok = (
        off0 == 0
        and cur == count
        and count <= max_el <= count + (1 << 30)
        and m == M
        and maxm == M
        and maxm0 == 2 * M
        and off_data == links0
        and label_off == links0 + 4 * dim
        and per_el == links0 + 4 * dim + 8
        and 0 <= maxlevel < 64
        and enter < count
        and 0 < mult < 10
        and efc >= 1
    )
    size = os.fstat(fd).st_size
    if not ok or size < HEADER.size + count * (per_el + 4):
        raise MapError(
            f"{where}: index file header does not match the map ({count} items, {dim}-d, M={M}); "
            "rebuild the map"
        )


def _bad(where: str, what: str) -> MapError:
    return MapError(f"{where}: index graph is corrupt ({what}); rebuild the map")


def check_graph(fd: int, dim: int, count: int, M: int, where: str) -> None:
    """Walk every link list of the index file open at ``fd`` (header already checked)."""
    if count == 0:
        return
    head = HEADER.unpack(os.pread(fd, HEADER.size, 0))
    per_el, maxlevel, enter = head[3], head[6], head[7]
    maxm, maxm0 = head[8], head[9]
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
        buf = memoryview(mm)
        try:
            _check_level0(buf, dim, count, per_el, maxm0, where)
            _check_upper(buf, count, per_el, maxm, maxlevel, enter, where)
        finally:
            buf.release()


def _strided(buf, dtype: str, shape: tuple[int, ...], offset: int, per_el: int) -> np.ndarray:
    strides = (per_el,) if len(shape) == 1 else (per_el, np.dtype(dtype).itemsize)
    return np.ndarray(shape, dtype, buffer=buf, offset=offset, strides=strides)


def _check_level0(buf, dim: int, count: int, per_el: int, maxm0: int, where: str) -> None:
    base = HEADER.size
    links_end = 4 + 4 * maxm0
    seen = np.zeros(count, bool)
    for start in range(0, count, CHUNK_ROWS):
        n = min(CHUNK_ROWS, count - start)
        off = base + start * per_el
        counts = _strided(buf, "<u2", (n,), off, per_el).astype(np.int64)
        if counts.max() > maxm0:
            row = start + int(np.argmax(counts > maxm0))
            raise _bad(where, f"element {row} has {counts.max()} level-0 links, at most {maxm0}")
        ids = _strided(buf, "<u4", (n, maxm0), off + 4, per_el)
        used = np.arange(maxm0) < counts[:, None]
        if (ids[used] >= count).any():
            raise _bad(where, f"a level-0 link points past the last of {count} elements")
        labels = _strided(buf, "<u8", (n,), off + links_end + 4 * dim, per_el)
        if (labels >= count).any():
            raise _bad(where, f"a label is outside the map's rows 0..{count - 1}")
        seen[labels.astype(np.int64)] = True
        vectors = _strided(buf, "<f4", (n, dim), off + links_end, per_el)
        check_vectors(vectors, f"{where}: index vectors", first_row=start)
    if not seen.all():
        raise _bad(where, f"labels do not cover the map's {count} rows (duplicates)")


def _check_upper(
    buf, count: int, per_el: int, maxm: int, maxlevel: int, enter: int, where: str
) -> None:
    block = 4 + 4 * maxm
    pos = HEADER.size + count * per_el
    end = len(buf)
    top = 0
    for element in range(count):
        if pos + 4 > end:
            raise _bad(where, "the file ends inside the upper-level link lists")
        (size,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if not size:
            continue
        levels, rest = divmod(size, block)
        if rest or levels > maxlevel or pos + size > end:
            raise _bad(where, f"element {element} has an upper-level link list of {size} bytes")
        lists = np.frombuffer(buf, "<u4", size // 4, pos).reshape(levels, maxm + 1)
        counts = lists[:, 0] & 0xFFFF
        if counts.max() > maxm:
            raise _bad(where, f"element {element} has {counts.max()} links, at most {maxm}")
        used = np.arange(maxm) < counts[:, None]
        if (lists[:, 1:][used] >= count).any():
            raise _bad(where, f"a link of element {element} points past the last element")
        if element == enter:
            top = levels
        pos += size
    if pos != end:
        raise _bad(where, f"{end - pos} bytes after the last link list")
    if top != maxlevel:
        raise _bad(where, f"the entry point has {top} levels, the graph {maxlevel}")
