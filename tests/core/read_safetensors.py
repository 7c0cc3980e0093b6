#!/usr/bin/env python3
# An independent safetensors reader and writer for safetensors_test.cpp, written from the published
# format (json + struct + numpy only): "read FILE" prints a JSON summary, "write FILE" writes a
# hand-built file with known tensors.
"""Usage: read_safetensors.py read FILE | read_safetensors.py write FILE

read: parses FILE strictly (8-byte little-endian header length N, N bytes of JSON padded with
spaces, data offsets back to back covering the data section) and prints
{"header_length": N, "metadata": {...}, "tensors": [{"name", "dtype", "shape", "data_offsets",
"sum", "weighted_sum"}, ...]} with tensors in file order; sums are float64 (exactly rounded with
math.fsum), weighted_sum weighs the i-th element in C order by i + 1, so a permutation shows.

write: writes FILE with the tensors listed in WRITTEN below, laid out in that order, header keys
in alphabetical order (as the Rust library emits them) and the header padded to a multiple of 8.
"""
import json
import math
import struct
import sys

try:
    import numpy as np
except ImportError:
    print("numpy is not installed (Debian: python3-numpy)", file=sys.stderr)
    sys.exit(77)

NUMPY_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "i1", "U8": "u1", "BOOL": "u1",
}
SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
         "U8": 1, "BOOL": 1}


def fail(message):
    print("read_safetensors.py: " + message, file=sys.stderr)
    sys.exit(1)


def as_float64(dtype, raw):
    if dtype == "BF16":
        # numpy has no bfloat16: a bf16 is the high half of a float32.
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).astype(np.float64)
    values = np.frombuffer(raw, dtype=NUMPY_DTYPES[dtype])
    if dtype == "BOOL" and values.size and values.max() > 1:
        fail("a BOOL tensor holds a byte other than 0 and 1")
    return values.astype(np.float64)


def read(path):
    with open(path, "rb") as file:
        blob = file.read()
    if len(blob) < 8:
        fail("shorter than 8 bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        fail("header length exceeds the file")
    header_text = blob[8:8 + n].decode("utf-8")
    if not header_text.startswith("{"):
        fail("header does not start with '{'")
    header = json.loads(header_text)  # trailing padding spaces are JSON whitespace
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        fail("__metadata__ is not string -> string")
    entries = sorted(header.items(), key=lambda item: tuple(item[1]["data_offsets"]))
    tensors = []
    expected = 0
    for name, info in entries:
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in SIZES:
            fail("unknown dtype " + dtype)
        if begin != expected:
            fail("data offsets are not back to back at " + name)
        count = math.prod(shape)
        if end - begin != count * SIZES[dtype]:
            fail("shape and data offsets of " + name + " disagree")
        values = as_float64(dtype, data[begin:end])
        weights = np.arange(1, count + 1, dtype=np.float64)
        tensors.append({
            "name": name, "dtype": dtype, "shape": shape, "data_offsets": [begin, end],
            "sum": math.fsum(values.tolist()),
            "weighted_sum": math.fsum((values * weights).tolist()),
        })
        expected = end
    if expected != len(data):
        fail("data section has bytes after the last tensor")
    print(json.dumps({"header_length": n, "metadata": metadata, "tensors": tensors}))


# (name, dtype, shape, struct format, values): the file layout order. safetensors_test.cpp
# expects exactly these.
WRITTEN = [
    ("weights", "F32", [2, 3], "<6f", [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]),
    ("ids", "I64", [3], "<3q", [-3, 0, 1 << 40]),
    ("half", "F16", [2], "<2e", [0.5, -1.5]),
    ("brain", "BF16", [2], "<2H", [0x3F80, 0xC020]),  # 1.0, -2.5
    ("empty", "F32", [0, 2], "<0f", []),
    ("scalar", "F64", [], "<d", [3.25]),
    ("counts", "I32", [2], "<2i", [-7, 2**31 - 1]),
    ("shorts", "I16", [2], "<2h", [-32768, 5]),
    ("tiny", "I8", [3], "<3b", [-128, 0, 127]),
    ("bytes", "U8", [3], "<3B", [0, 128, 255]),
    ("mask", "BOOL", [2, 2], "<4?", [True, False, False, True]),
]


def write(path):
    header = {"__metadata__": {"format": "pt", "source": "read_safetensors.py"}}
    data = b""
    for name, dtype, shape, fmt, values in WRITTEN:
        raw = struct.pack(fmt, *values)
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    if len(text) % 8 == 0:  # make sure the padding is exercised
        header["__metadata__"]["pad"] = "x"
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(text)) + text + data)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("read", "write"):
        fail(__doc__)
    (read if sys.argv[1] == "read" else write)(sys.argv[2])
