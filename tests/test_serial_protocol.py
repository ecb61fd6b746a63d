"""The serial protocol parser under garbage: hypothesis feeds it corrupted, truncated,
duplicated and interleaved frames in random chunks. It must never raise, never emit a frame
that was not sent, recover every frame the mutation left intact, and report a frame cut short
as ``Incomplete``. The examples are derandomized (same examples on every run and machine, no
example database), so CI cannot pass or fail by luck; health checks that only measure the
machine's speed are off (the suite runs on loaded machines)."""
from __future__ import annotations

import struct
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from devices.serial import protocol as P
from devices.serial.ops import needed_bytes, spec_to_request
from devices.serial.transport import LinkTiming

DETERMINISTIC = dict(derandomize=True, database=None, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

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
@settings(max_examples=200, **DETERMINISTIC)
def test_clean_stream_roundtrips_in_any_chunking(items, cuts):
    data = b"".join(_encode(i) for i in items)
    parser = P.StreamParser()
    events = _feed_chunked(parser, data, cuts)
    assert _frames(events) == [i for i in items if not isinstance(i, str)]
    assert [e.text for e in events if isinstance(e, P.Line)] == [i for i in items if isinstance(i, str)]
    assert parser.stats.errors == 0 and parser.stats.garbage_bytes == 0


def _spans(items, chunks):
    """(start, end, frame) of every frame in the concatenated chunks."""
    out, pos = [], 0
    for item, chunk in zip(items, chunks):
        if not isinstance(item, str):
            out.append((pos, pos + len(chunk), item))
        pos += len(chunk)
    return out


@given(st.lists(item_st, min_size=1, max_size=10), st.data())
@settings(max_examples=300, **DETERMINISTIC)
def test_mutated_streams_never_crash_nor_invent_frames(items, data):
    """Whatever the mutation: no frame that was not sent, and every sent frame whose bytes the
    mutation did not touch comes out (the parser resynchronises after any damage)."""
    chunks = [_encode(i) for i in items]
    kind = data.draw(st.sampled_from(["corrupt", "truncate", "duplicate", "interleave", "garbage"]))
    if kind == "duplicate":
        k = data.draw(st.integers(0, len(chunks) - 1))
        items.insert(k, items[k])
        chunks.insert(k, chunks[k])
    spans = _spans(items, chunks)
    stream = bytearray(b"".join(chunks))
    touched: set[int] = set()      # indexes into spans of frames the mutation damaged
    allowed = {f for _, _, f in spans}
    if kind == "corrupt" and stream:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(stream) - 1))
            stream[i] ^= data.draw(st.integers(1, 255))
            touched |= {j for j, (a, b, _) in enumerate(spans) if a <= i < b}
    elif kind == "truncate" and stream:
        a = data.draw(st.integers(0, len(stream) - 1))
        b = data.draw(st.integers(a + 1, len(stream)))
        touched |= {j for j, (lo, hi, _) in enumerate(spans) if lo < b and a < hi}
        del stream[a:b]
    elif kind in ("interleave", "garbage"):
        k = data.draw(st.sampled_from(sorted({0, len(stream)} | {a for a, _, _ in spans}
                                             | {b for _, b, _ in spans})))
        if kind == "interleave":   # another frame cut in two, its halves around the stream
            other = data.draw(frame_st)
            o = P.encode_frame(*other)
            cut = data.draw(st.integers(0, len(o)))
            allowed.add(other)
            stream = stream[:k] + o[:cut] + stream[k:] + o[cut:]
        else:
            stream[k:k] = data.draw(st.binary(min_size=1, max_size=64))
    parser = P.StreamParser()
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    events = _feed_chunked(parser, bytes(stream), cuts) + parser.flush()
    got = _frames(events)
    # no invented frame (a CRC-32 collision is the only way, ~2^-32 per candidate)
    assert set(got) <= allowed
    intact = Counter(f for j, (_, _, f) in enumerate(spans) if j not in touched)
    assert not intact - Counter(got), "a frame the mutation left intact was lost"
    if kind == "duplicate":  # the parser passes duplicates on; the transport drops stale seqs
        assert Counter(got) == Counter(f for _, _, f in spans)
    assert parser.pending() == 0


@given(st.lists(item_st, max_size=6), frame_st, st.data())
@settings(max_examples=200, **DETERMINISTIC)
def test_truncated_tail_is_reported_incomplete(items, last, data):
    """A stream that stops inside its last frame: every earlier item comes out, the cut frame
    does not, and flush() reports it as Incomplete with the bytes that did arrive."""
    head = b"".join(_encode(i) for i in items)
    frame = P.encode_frame(*last)
    have = data.draw(st.integers(1, len(frame) - 1))
    parser = P.StreamParser()
    cuts = data.draw(st.lists(st.integers(0, len(head) + have), max_size=8))
    events = _feed_chunked(parser, head + frame[:have], cuts)
    assert _frames(events) == [i for i in items if not isinstance(i, str)]
    assert parser.pending() == have            # waits for the rest, however long it takes
    assert parser.head() == P.Incomplete("frame", have, len(frame) if have >= 7 else None)
    tail = parser.flush()
    assert tail[0] == P.Incomplete("frame", have, len(frame) if have >= 7 else None)
    assert last not in _frames(tail) and parser.stats.incomplete >= 1


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
    events = parser.flush()
    assert events[0] == P.Incomplete("frame", 29, len(a))   # its 20 bytes + the line after
    assert [e.text for e in events if isinstance(e, P.Line)] == ["m-ready"]
    assert parser.stats.incomplete >= 1 and parser.stats.errors >= 1


def test_overlong_length_is_rejected_without_waiting():
    parser = P.StreamParser()
    bogus = b"\xa5\x5a\x01\x82\x00" + struct.pack("<H", 60000)
    events = parser.feed(bogus + b"m-ready\r\n")
    assert [e.text for e in events if isinstance(e, P.Line)] == ["m-ready"]
    assert parser.stats.length_errors == 1


@pytest.mark.parametrize("payload, problem", [
    (b"", "short RESULT payload (0 bytes"),
    (b"\x00" * 12, "short RESULT payload (12 bytes"),
    (struct.pack(P.RESULT_FMT, 0, 3, 1, 1, 10, 10, 10, 4, 0) + b"\x00" * 8, "says 3 samples"),
    (struct.pack(P.RESULT_FMT, 0, 0, 1, 1, 10, 10, 10, 4, 0), "0 samples"),
    (struct.pack(P.RESULT_FMT, 9, 0, 1, 1, 10, 10, 10, 4, 0), "unknown status 9"),
    (struct.pack(P.RESULT_FMT, 0, 2, 1, 1, 10, 10, 10, 4, 0) + b"\x00" * 8, "2 samples, 3"),
])
def test_malformed_result_payloads_raise_payload_error(payload, problem):
    with pytest.raises(P.PayloadError) as err:
        P.decode_result(payload, samples=3)
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_well_formed_result_decodes():
    payload = struct.pack(P.RESULT_FMT, 0, 3, 2, 1, 100, 96, 40, 32, 7) + struct.pack("<3I", 5, 6, 7)
    res = P.decode_result(payload, samples=3)
    assert res["ticks"] == [5, 6, 7] and res["status"] == "ok" and res["peak_bytes"] == 96
    msg = struct.pack(P.RESULT_FMT, 2, 0, 0, 0, 99999, 0, 0, 0, 0) + b"does not fit"
    assert P.decode_result(msg, samples=3)["message"] == "does not fit"


def test_malformed_hello_and_calib_raise_payload_error():
    with pytest.raises(P.PayloadError):
        P.decode_hello(b"fw=0.2.0;cpu=x;")           # no proto, no board
    assert P.decode_hello(b"proto=1;board=qemu-m0;rx_buffer=256;")["rx_buffer"] == 256
    with pytest.raises(P.PayloadError):
        P.decode_calib(b"\x01\x02")
    assert P.decode_calib(struct.pack("<II", 10, 20)) == (10, 20)


def test_reply_limits_scale_with_baud_and_payload():
    slow, fast = LinkTiming(9600), LinkTiming(115200)
    assert slow.transfer_s(960) == pytest.approx(1.0)      # 10 bits per byte (8N1)
    assert fast.transfer_s(11520) == pytest.approx(1.0)
    assert slow.reply_limit(91, 300, 5.0) > fast.reply_limit(91, 300, 5.0)
    assert slow.reply_limit(91, 3000, 5.0) - slow.reply_limit(91, 300, 5.0) == \
        pytest.approx(2 * slow.transfer_s(2700))
    assert fast.reply_limit(91, 300, 120.0) - fast.reply_limit(91, 300, 5.0) == pytest.approx(115)
    assert slow.poke_after_s > fast.poke_after_s and slow.resend_after_s > fast.resend_after_s


def test_needed_bytes_of_tinycnn_conv():
    spec = {"op": "conv2d", "phase": "fwd", "dtype": "float32", "inputs": [[1, 3, 16, 16]],
            "params": {"weight": [8, 3, 3, 3], "bias": [8]},
            "attrs": {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}}
    assert needed_bytes(spec_to_request(spec)) == 3 * 256 * 4 + 216 * 4 + 32 + 8 * 256 * 4


def test_qas_multipliers_encode_lr_sg_over_sw_squared():
    import numpy as np

    from devices.serial.ops import qas_multipliers
    from devices.serial.reference import requant
    scales = [0.02, 0.005, 0.11]
    pairs = qas_multipliers(0.05, 0.004, scales)
    for (m, s), sw in zip(pairs, scales):
        real = 0.05 * 0.004 / sw ** 2
        assert abs(m * 2.0 ** (s - 31) - real) <= real * 2 ** -30
        g = np.arange(-128, 128)
        # the int8 step is the real step rounded (TFLite rounds twice: high-mul, then shift)
        step = requant(g, m, s)
        assert np.all(np.abs(step - g * real) <= 0.5 + 0.5 * 2.0 ** min(s, 0) + 1e-9)
