"""The serial protocol parser under garbage: hypothesis feeds it corrupted, truncated,
duplicated and interleaved frames in random chunks. It must never raise, never emit a frame
that was not sent, and count what it threw away."""
from __future__ import annotations

import struct

from hypothesis import given, settings, strategies as st

from devices.serial import protocol as P
from devices.serial.ops import needed_bytes, spec_to_request

frame_st = st.builds(lambda t, s, p: (t, s, p), st.sampled_from([0x81, 0x82, 0x84, 0x90]),
                     st.integers(0, 255), st.binary(max_size=300))
line_st = st.sampled_from(["m-ready", "m-name-costdb-qemu-m4f", "m-error-crc"])
item_st = st.one_of(frame_st, line_st)


def _encode(item) -> bytes:
    if isinstance(item, str):
        return item.encode() + b"\r\n"
    return P.encode_frame(*item)


def _feed_chunked(parser: P.StreamParser, data: bytes, cuts: list[int]) -> list:
    out, pos = [], 0
    for c in sorted(set(min(len(data), c) for c in cuts)) + [len(data)]:
        out += parser.feed(data[pos:c])
        pos = c
    return out


def _frames(events) -> list[tuple]:
    return [(e.type, e.seq, e.payload) for e in events if isinstance(e, P.Frame)]


@given(st.lists(item_st, max_size=12), st.lists(st.integers(0, 5000), max_size=20))
@settings(max_examples=200, deadline=None)
def test_clean_stream_roundtrips_in_any_chunking(items, cuts):
    data = b"".join(_encode(i) for i in items)
    parser = P.StreamParser()
    events = _feed_chunked(parser, data, cuts)
    assert _frames(events) == [i for i in items if not isinstance(i, str)]
    assert [e.text for e in events if isinstance(e, P.Line)] == [i for i in items if isinstance(i, str)]
    assert parser.stats.errors == 0 and parser.stats.garbage_bytes == 0


@given(st.lists(item_st, min_size=1, max_size=10), st.data())
@settings(max_examples=300, deadline=None)
def test_mutated_streams_never_crash_nor_invent_frames(items, data):
    sent = [i for i in items if not isinstance(i, str)]
    chunks = [_encode(i) for i in items]
    kind = data.draw(st.sampled_from(["corrupt", "truncate", "duplicate", "interleave", "garbage"]))
    dup_frame = False
    if kind == "duplicate":
        k = data.draw(st.integers(0, len(chunks) - 1))
        chunks.insert(k, chunks[k])
        dup_frame = not isinstance(items[k], str)
    elif kind == "interleave":
        other = [_encode(i) for i in data.draw(st.lists(frame_st, min_size=1, max_size=3))]
        k = data.draw(st.integers(0, len(chunks)))
        o = other[0]
        cut = data.draw(st.integers(0, len(o)))
        # a frame split around another item: its two halves are interleaved with the stream
        chunks = chunks[:k] + [o[:cut]] + chunks[k:] + [o[cut:]]
    stream = bytearray(b"".join(chunks))
    if kind == "corrupt" and stream:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(stream) - 1))
            stream[i] ^= data.draw(st.integers(1, 255))
    cut_inside_frame = False
    if kind == "truncate" and stream:
        a = data.draw(st.integers(0, len(stream) - 1))
        b = data.draw(st.integers(a, len(stream)))
        pos = 0
        for item, chunk in zip(items, chunks):
            lo, hi = pos, pos + len(chunk)
            if not isinstance(item, str) and b > a and any(lo < c < hi for c in (a, b)):
                cut_inside_frame = True
            pos = hi
        del stream[a:b]
    elif kind == "garbage":
        k = data.draw(st.integers(0, len(stream)))
        stream[k:k] = data.draw(st.binary(min_size=1, max_size=64))
    parser = P.StreamParser()
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    events = _feed_chunked(parser, bytes(stream), cuts)
    events += parser.resync()
    while parser.pending():
        events += parser.resync()
    got = _frames(events)
    allowed = set(sent)
    if kind == "interleave":
        allowed |= {(f.type, f.seq, f.payload) for f in P.StreamParser().feed(b"".join(chunks))
                    if isinstance(f, P.Frame)}
    # no invented frame (a CRC-32 collision is the only way, ~2^-32 per candidate)
    assert set(got) <= allowed
    if kind == "duplicate":  # the parser passes duplicates on; the transport drops stale seqs
        assert len(got) == len(sent) + dup_frame
    if kind == "garbage":    # garbage between items costs nothing but the garbage
        assert set(sent) <= set(got) or parser.stats.errors + parser.stats.garbage_bytes > 0
    lost = len([f for f in sent if f not in got])
    if (kind == "corrupt" and lost) or cut_inside_frame:
        assert parser.stats.errors + parser.stats.garbage_bytes > 0


def test_crc_error_counted_and_next_frame_recovered():
    a = P.encode_frame(0x82, 1, b"hello world")
    b = P.encode_frame(0x82, 2, b"second")
    bad = bytearray(a)
    bad[10] ^= 0xFF
    parser = P.StreamParser()
    events = parser.feed(bytes(bad) + b"m-ready\r\n" + b)
    assert _frames(events) == [(0x82, 2, b"second")]
    assert parser.stats.crc_errors == 1
    assert [e.text for e in events if isinstance(e, P.Line)] == ["m-ready"]


def test_truncated_frame_resync_recovers_following_line():
    a = P.encode_frame(0x82, 1, b"x" * 40)
    parser = P.StreamParser()
    events = parser.feed(a[:20] + b"m-ready\r\n")
    assert events == []                      # still waiting for the frame's remaining bytes
    events = parser.resync()
    while parser.pending():
        events += parser.resync()
    assert [e.text for e in events if isinstance(e, P.Line)] == ["m-ready"]
    assert parser.stats.errors >= 1


def test_overlong_length_is_rejected_without_waiting():
    parser = P.StreamParser()
    bogus = b"\xa5\x5a\x01\x82\x00" + struct.pack("<H", 60000)
    events = parser.feed(bogus + b"m-ready\r\n")
    assert [e.text for e in events if isinstance(e, P.Line)] == ["m-ready"]
    assert parser.stats.length_errors == 1


def test_result_decoding_rejects_inconsistent_sample_count():
    payload = struct.pack(P.RESULT_FMT, 0, 3, 1, 1, 10, 10, 10, 4, 0) + b"\x00" * 8
    try:
        P.decode_result(payload)
    except ValueError:
        pass
    else:
        raise AssertionError("inconsistent RESULT accepted")


def test_needed_bytes_of_tinycnn_conv():
    spec = {"op": "conv2d", "phase": "fwd", "dtype": "float32", "inputs": [[1, 3, 16, 16]],
            "params": {"weight": [8, 3, 3, 3], "bias": [8]},
            "attrs": {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}}
    assert needed_bytes(spec_to_request(spec)) == 3 * 256 * 4 + 216 * 4 + 32 + 8 * 256 * 4
