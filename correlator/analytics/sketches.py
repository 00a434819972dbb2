"""Mergeable sketches for rollups: a histogram with fixed logarithmic buckets for
durations, and a HyperLogLog for distinct sessions and conversations.

Both merge by plain arithmetic (add counts, take register maxima), so minute rows
sum into hours, hours into days, and any window into one answer without
touching raw turns.

Errors, documented here and in the README:
- ``LogHistogram``: every bucket spans (γ^(i−1), γ^i] with γ = 1.01/0.99, and a
  quantile answers the bucket's midpoint 2γ^i/(γ+1): within 1 % of the exact
  nearest-rank value (the DDSketch construction). Values below 1 µs count as 0.
- ``HyperLogLog``: exact up to 64 distinct values (it keeps their 64-bit
  hashes), then 2^11 registers: standard error 1.04/√2048 ≈ 2.3 %.

Histograms serialise to flat JSON lists of integers (``[index, count, …]``); a
HyperLogLog to its hashes, or to its registers as base64: compact, quick to merge.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import sys
from array import array
from typing import Any

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
_ZERO_BELOW_MS = 1e-3
ZERO_BUCKET = -(10**6)  # sorts before every real bucket


def bucket_of(value: float) -> int:
    if value < _ZERO_BELOW_MS:
        return ZERO_BUCKET
    return math.ceil(math.log(value) / _LOG_GAMMA)


def bucket_value(index: int) -> float:
    if index == ZERO_BUCKET:
        return 0.0
    return 2 * GAMMA**index / (GAMMA + 1)


# A histogram packed for merging many stored rows (``analytics.rollups.read_rows``): its
# buckets from ``lo`` up as one integer with a 64-bit lane each, so that adding two rows'
# counts is one big-integer addition instead of a Python step per bucket. A lane never
# carries into the next: a count is at most the turns of a window, far below 2^64.
_LANE_BYTES = 8


class PackedHistogram:
    """A stored histogram's buckets: the zero bucket's count, and the others as lanes
    of one integer from bucket ``lo`` up (``lanes`` 0 when there are none)."""

    __slots__ = ("lanes", "lo", "zeros")

    def __init__(self, flat: list[int]) -> None:
        self.zeros, self.lo, self.lanes = 0, 0, 0
        pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        real = [(index, n) for index, n in pairs if index != ZERO_BUCKET]
        self.zeros = sum(n for index, n in pairs if index == ZERO_BUCKET)
        if real:
            self.lo = min(index for index, _ in real)
            lanes = array("Q", bytes(_LANE_BYTES * (max(i for i, _ in real) - self.lo + 1)))
            for index, n in real:
                lanes[index - self.lo] += n
            self.lanes = int.from_bytes(lanes.tobytes(), sys.byteorder)

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> PackedHistogram:
        """A histogram stored packed (``LogHistogram.to_packed``): two C-speed decodes,
        no Python step per bucket."""
        packed = cls.__new__(cls)
        packed.zeros, packed.lo = stored.get("z", 0), stored.get("lo", 0)
        lanes = stored.get("b")
        packed.lanes = int.from_bytes(binascii.a2b_base64(lanes), "little") if lanes else 0
        return packed


def _unpacked(lanes: int) -> array[int]:
    out = array("Q")
    out.frombytes(lanes.to_bytes(-(-lanes.bit_length() // 64) * _LANE_BYTES, sys.byteorder))
    return out


class LogHistogram:
    """Bucket index -> count. Packed rows merged in (``merge_packed``) wait as one
    integer per first bucket and join ``counts`` when it is next read."""

    __slots__ = ("_counts", "_packed", "_zeros")

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self._counts: dict[int, int] = counts if counts is not None else {}
        self._packed: dict[int, int] = {}  # first bucket -> summed lanes
        self._zeros = 0

    @property
    def counts(self) -> dict[int, int]:
        if self._packed or self._zeros:
            self._settle()
        return self._counts

    def merge_packed(self, packed: PackedHistogram) -> None:
        if packed.lanes:
            self._packed[packed.lo] = self._packed.get(packed.lo, 0) + packed.lanes
        self._zeros += packed.zeros

    def _settle(self) -> None:
        counts = self._counts
        if self._zeros:
            counts[ZERO_BUCKET] = counts.get(ZERO_BUCKET, 0) + self._zeros
        if self._packed:
            # One integer from the lowest first bucket (shifts are cheap), unpacked once.
            base = min(self._packed)
            summed = sum(lanes << (64 * (lo - base)) for lo, lanes in self._packed.items())
            for offset, n in enumerate(_unpacked(summed)):
                if n:
                    counts[base + offset] = counts.get(base + offset, 0) + n
        self._packed, self._zeros = {}, 0

    def add(self, value: float) -> None:
        self.add_bucket(bucket_of(value))

    def add_bucket(self, index: int) -> None:
        self.counts[index] = self.counts.get(index, 0) + 1

    def merge(self, other: LogHistogram) -> None:
        if not other._counts:  # only packed rows merged into it: add their lanes as they are
            for lo, lanes in other._packed.items():
                self._packed[lo] = self._packed.get(lo, 0) + lanes
            self._zeros += other._zeros
            return
        counts = self.counts
        for index, n in other.counts.items():
            counts[index] = counts.get(index, 0) + n

    def merge_flat(self, flat: list[int]) -> None:
        counts = self.counts
        for i in range(0, len(flat), 2):
            index = flat[i]
            counts[index] = counts.get(index, 0) + flat[i + 1]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def quantile(self, q: float) -> float | None:
        """Nearest rank: the bucket holding the ceil(q·n)-th smallest value."""
        counts = self.counts
        n = sum(counts.values())
        if not n:
            return None
        rank = max(1, math.ceil(q * n))
        seen = 0
        for index in sorted(counts):
            seen += counts[index]
            if seen >= rank:
                return bucket_value(index)
        raise AssertionError("unreachable: ranks end at the total")

    def to_packed(self) -> dict[str, Any]:
        """The buckets as ``PackedHistogram.from_stored`` reads them: the zero bucket's
        count, the first other bucket, and 64-bit little-endian lanes from it up as
        base64 (a reader of many rows adds them as integers, bucket by bucket in C)."""
        counts = self.counts
        real = [index for index in counts if index != ZERO_BUCKET]
        out: dict[str, Any] = {"z": counts.get(ZERO_BUCKET, 0)}
        if real:
            lo = min(real)
            lanes = array("Q", bytes(_LANE_BYTES * (max(real) - lo + 1)))
            for index in real:
                lanes[index - lo] = counts[index]
            if sys.byteorder != "little":
                lanes.byteswap()
            out |= {"lo": lo, "b": base64.b64encode(lanes.tobytes()).decode()}
        return out

    def to_flat(self) -> list[int]:
        flat: list[int] = []
        for index in sorted(self.counts):
            flat += (index, self.counts[index])
        return flat


HLL_PRECISION = 11
HLL_REGISTERS = 1 << HLL_PRECISION
_HLL_ALPHA = 0.7213 / (1 + 1.079 / HLL_REGISTERS)
_HLL_REST_BITS = 64 - HLL_PRECISION


def _hash64(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")


_RANK_WEIGHT = [2.0**-rank for rank in range(_HLL_REST_BITS + 2)]
_HIGH_BITS = int.from_bytes(b"\x80" * HLL_REGISTERS, "big")


def max_bytes(a: bytes | bytearray, b: bytes) -> bytes:
    """Bytewise max of two register arrays (every value below 128), with a handful of
    big-integer operations instead of 2,048 calls to ``max``."""
    return max_lanes(int.from_bytes(a, "big"), int.from_bytes(b, "big")).to_bytes(len(a), "big")


def max_lanes(x: int, y: int) -> int:
    """``max_bytes`` of two register arrays read as big-endian integers: in each byte
    lane, (x | 0x80) − y keeps its high bit exactly when x ≥ y and never borrows across
    lanes."""
    x_wins = (((x | _HIGH_BITS) - y) & _HIGH_BITS) >> 7
    mask = (x_wins << 8) - x_wins  # 0xFF in the lanes where x ≥ y
    return (x & mask) | (y & ~mask)


class PackedHll:
    """A stored HyperLogLog for merging many rows: its hashes while exact, else its
    registers as one big-endian integer; an exact one's registers are worked out the
    first time a merge needs them, and kept (the row is cached)."""

    __slots__ = ("_registers", "hashes")

    def __init__(self, data: dict[str, Any]) -> None:
        self.hashes: tuple[int, ...] | None = None
        self._registers: int | None = None
        dense = data.get("d")
        if dense:
            self._registers = int.from_bytes(base64.b64decode(dense), "big")
        if data.get("h") or not dense:
            self.hashes = tuple(data.get("h", ()))
            if dense:  # both (never written so): the hashes fold into the registers
                one = HyperLogLog()
                one.merge_json(data)
                self._registers, self.hashes = one.registers_int(), None

    @property
    def registers(self) -> int:
        if self._registers is None:
            one = HyperLogLog()
            one._to_registers()
            for h in self.hashes or ():
                one.add_hash(h)
            self._registers = one.registers_int()
        return self._registers


class HyperLogLog:
    """Distinct count: exact (a set of 64-bit hashes) up to ``EXACT_LIMIT`` values,
    then 2^11 registers (linear counting below about 5,000: within about 1 % for a
    few hundred). A minute with three sessions stores three hashes. The limit is
    low because merging stored hashes costs a Python step each: at 512, the
    30-day overview spent most of its time re-adding day rows' hashes.

    Registers are one byte each, stored as base64 (``{"d": …}``, 2.7 KB); two merge
    by ``max_bytes``, a few big-integer operations."""

    EXACT_LIMIT = 64
    __slots__ = ("_pending", "_pending_hashes", "_pending_registers", "hashes", "registers")

    def __init__(self) -> None:
        self.hashes: set[int] = set()
        self.registers: bytearray | None = None  # None while exact
        # Packed rows merged in (``merge_packed``), folded in by ``settle``: the
        # exact ones, their hashes' union, and the maximum of the dense ones' registers.
        self._pending: list[PackedHll] = []
        self._pending_hashes: set[int] = set()
        self._pending_registers: int | None = None

    @staticmethod
    def hash_of(value: str) -> int:
        """Hash once, add to many sketches."""
        return _hash64(value)

    def add(self, value: str) -> None:
        self.add_hash(_hash64(value))

    def add_hash(self, h: int) -> None:
        if self.registers is None:
            self.hashes.add(h)
            if len(self.hashes) > self.EXACT_LIMIT:
                self._to_registers()
            return
        index = h >> _HLL_REST_BITS
        rank = _HLL_REST_BITS - (h & ((1 << _HLL_REST_BITS) - 1)).bit_length() + 1
        if rank > self.registers[index]:
            self.registers[index] = rank

    def _to_registers(self, registers: bytes | None = None) -> None:
        hashes, self.hashes = self.hashes, set()
        self.registers = bytearray(registers or bytes(HLL_REGISTERS))
        for h in hashes:
            self.add_hash(h)

    def merge_json(self, data: dict[str, Any]) -> None:
        for h in data.get("h", ()):
            self.add_hash(h)
        dense = data.get("d")
        if dense:
            other = base64.b64decode(dense)
            if self.registers is None:
                self._to_registers(other)
            else:
                self.registers = bytearray(max_bytes(self.registers, other))

    def merge(self, other: HyperLogLog) -> None:
        other.settle()
        self.merge_json(other.to_json())

    def merge_packed(self, packed: PackedHll) -> None:
        """Merge a stored row, as ``merge_json`` would, once ``settle`` runs (every
        reader of the sketch calls it): the order rows merge in never changes the
        result (exact while the union of every hash is at most ``EXACT_LIMIT``, else
        the registers' maximum), so waiting changes nothing either."""
        if packed.hashes is not None:
            self._pending.append(packed)
            self._pending_hashes.update(packed.hashes)
        else:
            dense, seen = packed.registers, self._pending_registers
            self._pending_registers = dense if seen is None else max_lanes(seen, dense)

    def settle(self) -> None:
        if not (self._pending or self._pending_registers is not None):
            return
        union = self._pending_hashes
        if (
            self.registers is None
            and self._pending_registers is None
            and len(self.hashes | union) <= self.EXACT_LIMIT
        ):
            self.hashes |= union
        else:
            if self.registers is None:
                self._to_registers()
            registers = self.registers_int()
            if self._pending_registers is not None:
                registers = max_lanes(registers, self._pending_registers)
            for packed in self._pending:
                registers = max_lanes(registers, packed.registers)
            self.registers = bytearray(registers.to_bytes(HLL_REGISTERS, "big"))
        self._pending, self._pending_hashes, self._pending_registers = [], set(), None

    def registers_int(self) -> int:
        return int.from_bytes(self.registers or bytes(HLL_REGISTERS), "big")

    def estimate(self) -> int:
        self.settle()
        if self.registers is None:
            return len(self.hashes)
        zeros = self.registers.count(0)
        harmonic = sum(map(_RANK_WEIGHT.__getitem__, self.registers))
        raw = _HLL_ALPHA * HLL_REGISTERS * HLL_REGISTERS / harmonic
        if raw <= 2.5 * HLL_REGISTERS and zeros:
            return round(HLL_REGISTERS * math.log(HLL_REGISTERS / zeros))  # linear counting
        return round(raw)

    def to_json(self) -> dict[str, Any]:
        self.settle()
        if self.registers is None:
            return {"h": sorted(self.hashes)}
        return {"d": base64.b64encode(self.registers).decode()}
