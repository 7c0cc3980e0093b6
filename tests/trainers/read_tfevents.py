#!/usr/bin/env python3
# An independent TensorBoard event-file reader for tensorboard_writer_test.cpp, written from the
# published formats with the standard library only (no tensorflow, tensorboard or protobuf).
"""Usage: read_tfevents.py FILE

Parses FILE as TFRecord framing (uint64 LE length, uint32 LE masked CRC-32C of the length bytes,
payload, uint32 LE masked CRC-32C of the payload), checking both checksums with a bitwise CRC-32C,
decodes each payload as a tensorflow.Event by hand (protobuf wire format) and prints
{"file_version": str or null, "file_version_wall_time": float or null, "records": N,
 "truncated": bool,
 "events": [{"step": int, "wall_time": float, "scalars": [[tag, value], ...]}, ...]}
with one entry per Event that carries a summary (the file_version Event is not listed). Values
that are not finite are printed as the strings "NaN", "Infinity", "-Infinity".

Exit status: 0 read to the end; 1 a CRC mismatch or malformed framing/protobuf (message on
stderr); 2 bad usage; 3 the file ends inside a record (what a killed writer can leave): the
records before it are still printed.
"""
import json
import math
import struct
import sys


class FormatError(Exception):
    pass


class Truncated(Exception):
    pass


def crc32c(data):
    # Bit by bit, deliberately unlike the table-driven C++ implementation.
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(blob):
    """Yields each record's payload; raises Truncated at a partial last record."""
    offset = 0
    while offset < len(blob):
        if len(blob) - offset < 12:
            raise Truncated(f"{len(blob) - offset} bytes at offset {offset} are not a whole header")
        length_bytes = blob[offset:offset + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack("<I", blob[offset + 8:offset + 12])
        if length_crc != masked_crc32c(length_bytes):
            raise FormatError(f"length CRC mismatch at offset {offset}: stored {length_crc:#010x}, "
                              f"computed {masked_crc32c(length_bytes):#010x}")
        start = offset + 12
        end = start + length
        if end + 4 > len(blob):
            raise Truncated(f"record at offset {offset} needs {length + 16} bytes, "
                            f"{len(blob) - offset} remain")
        payload = blob[start:end]
        (payload_crc,) = struct.unpack("<I", blob[end:end + 4])
        if payload_crc != masked_crc32c(payload):
            raise FormatError(f"payload CRC mismatch in record at offset {offset}: stored "
                              f"{payload_crc:#010x}, computed {masked_crc32c(payload):#010x}")
        yield payload
        offset = end + 4


def read_varint(buf, pos):
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise FormatError("varint runs past the end of its message")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >= 1 << 64:
                raise FormatError("varint exceeds 64 bits")
            return result, pos
    raise FormatError("varint longer than 10 bytes")


def fields(buf):
    """Yields (field_number, wire_type, value) for a protobuf message; value is an int for
    varints, bytes for fixed64/fixed32/length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise FormatError("field number 0")
        if wire_type == 0:
            value, pos = read_varint(buf, pos)
        elif wire_type == 1 or wire_type == 5:
            size = 8 if wire_type == 1 else 4
            if pos + size > len(buf):
                raise FormatError(f"fixed{size * 8} field {number} runs past the end")
            value, pos = buf[pos:pos + size], pos + size
        elif wire_type == 2:
            size, pos = read_varint(buf, pos)
            if pos + size > len(buf):
                raise FormatError(f"length-delimited field {number} runs past the end")
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise FormatError(f"unsupported wire type {wire_type} (field {number})")
        yield number, wire_type, value


def expect(wire_type, wanted, what):
    if wire_type != wanted:
        raise FormatError(f"{what} has wire type {wire_type}, expected {wanted}")


def decode_value(buf):
    tag, value = None, None
    for number, wire_type, raw in fields(buf):
        if number == 1:
            expect(wire_type, 2, "Summary.Value.tag")
            tag = raw.decode("utf-8")
        elif number == 2:
            expect(wire_type, 5, "Summary.Value.simple_value")
            (value,) = struct.unpack("<f", raw)
    if tag is None or value is None:
        raise FormatError("Summary.Value without tag or simple_value")
    return tag, value


def decode_event(buf):
    event = {"wall_time": None, "step": 0, "file_version": None, "scalars": None}
    for number, wire_type, raw in fields(buf):
        if number == 1:
            expect(wire_type, 1, "Event.wall_time")
            (event["wall_time"],) = struct.unpack("<d", raw)
        elif number == 2:
            expect(wire_type, 0, "Event.step")
            event["step"] = raw - (1 << 64) if raw >= 1 << 63 else raw  # int64
        elif number == 3:
            expect(wire_type, 2, "Event.file_version")
            event["file_version"] = raw.decode("utf-8")
        elif number == 5:
            expect(wire_type, 2, "Event.summary")
            scalars = event["scalars"] or []
            for value_number, value_type, value_raw in fields(raw):
                if value_number == 1:
                    expect(value_type, 2, "Summary.value")
                    scalars.append(list(decode_value(value_raw)))
            event["scalars"] = scalars
    if event["wall_time"] is None:
        raise FormatError("Event without wall_time")
    return event


def json_number(value):
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], "rb") as handle:
        blob = handle.read()
    result = {"file_version": None, "file_version_wall_time": None, "records": 0,
              "truncated": False, "events": []}
    status = 0
    try:
        for payload in read_records(blob):
            result["records"] += 1
            event = decode_event(payload)
            if event["file_version"] is not None:
                if result["records"] != 1:
                    raise FormatError("file_version in a record other than the first")
                result["file_version"] = event["file_version"]
                result["file_version_wall_time"] = event["wall_time"]
            if event["scalars"] is not None:
                result["events"].append({
                    "step": event["step"],
                    "wall_time": event["wall_time"],
                    "scalars": [[tag, json_number(value)] for tag, value in event["scalars"]],
                })
    except FormatError as error:
        print(f"{argv[1]}: {error}", file=sys.stderr)
        return 1
    except Truncated as error:
        print(f"{argv[1]}: truncated: {error}", file=sys.stderr)
        result["truncated"] = True
        status = 3
    print(json.dumps(result, allow_nan=False))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
