"""web/multipart.py, the fast multipart decoder, finds exactly the matches of Werkzeug's per-request
boundary patterns."""
from __future__ import annotations

import io
import random

from werkzeug import formparser
from werkzeug.sansio.multipart import MultipartDecoder

from keras_rest_api.web import multipart

# Bytes that make boundaries, line breaks and blanks collide in every way the patterns care about.
ALPHABET = [b"-", b"\r", b"\n", b" ", b"\t", b"a", b"b", b"\x0b"]


def _compare(boundary: bytes, buffer: bytes, pos: int) -> None:
    reference = MultipartDecoder(boundary)
    fast = multipart.FastMultipartDecoder(boundary)
    for ours, theirs in ((fast.preamble_re, reference.preamble_re), (fast.boundary_re, reference.boundary_re)):
        expected = theirs.search(buffer, pos)
        got = ours.search(buffer, pos)
        if expected is None:
            assert got is None, (boundary, buffer, pos)
        else:
            assert got is not None, (boundary, buffer, pos)
            assert (got.start(), got.end(), got.group(1)) == (expected.start(), expected.end(), expected.group(1)), \
                (boundary, buffer, pos)


def test_same_matches_as_werkzeug_on_random_buffers() -> None:
    rng = random.Random(14)
    for boundary in (b"ab", b"a", b"-a", b"a-", b"--", b"a b", b"boundary123"):
        for _ in range(3000):
            pieces = [rng.choice(ALPHABET + [b"--" + boundary] * 3) for _ in range(rng.randrange(0, 14))]
            buffer = b"".join(pieces)
            _compare(boundary, buffer, rng.randrange(0, len(buffer) + 1))
            _compare(boundary, bytes(bytearray(buffer)), 0)


def test_parses_a_form_like_werkzeug() -> None:
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n3\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + bytes(range(256)) * 300 + b"\r\n--XyZ--\r\n")
    results = []
    for decoder in (MultipartDecoder, multipart.FastMultipartDecoder):
        original = formparser.MultipartDecoder
        formparser.MultipartDecoder = decoder
        try:
            parser = formparser.MultiPartParser(buffer_size=4096)
            fields, files = parser.parse(io.BytesIO(body), b"XyZ", len(body))
        finally:
            formparser.MultipartDecoder = original
        results.append((fields.to_dict(), {k: v.read() for k, v in files.items()}))
    assert results[0] == results[1]
    assert results[0][0] == {"top_k": "3"} and results[0][1]["image"] == bytes(range(256)) * 300


def test_install_uses_it() -> None:
    assert multipart.install()
    assert formparser.MultipartDecoder is multipart.FastMultipartDecoder
