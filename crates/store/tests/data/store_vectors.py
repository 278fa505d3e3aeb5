#!/usr/bin/env python3
"""Recomputes the test vectors of docs/STORE.md with an independent
implementation (pip install blake3 cryptography zstandard) and prints them.

zstd output differs between implementations and levels, so the compressed
vectors ("... v2 plaintext") are not recomputed: they are read from
docs/STORE.md, and this script checks that each starts with its magic and
decompresses, under the reader's bounds (a window of at most 2 MiB; the
pack index's frame states its size), to exactly the body it computes
itself; it exits non-zero otherwise. Every line it prints must equal the
document's line of the same name."""
import os
import struct
import sys

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "docs", "STORE.md")


def doc_vectors():
    text = open(DOC, encoding="utf-8").read()
    block = text[text.index("<!-- vectors -->"):text.index("<!-- /vectors -->")]
    out = {}
    for line in block.splitlines():
        name, _, value = line.partition(":")
        value = value.strip()
        if value and all(c in "0123456789abcdef" for c in value):
            out[name.strip()] = bytes.fromhex(value)
    return out


def check_compressed(name, magic, body, stated_size=False):
    """The document's vector `name`: `magic` then zstd of `body`."""
    value = doc_vectors()[name]
    if value[:len(magic)] != magic:
        sys.exit(f"{name}: does not start with {magic!r}")
    frame = value[len(magic):]
    params = zstandard.get_frame_parameters(frame)
    if params.window_size > 1 << 21:
        sys.exit(f"{name}: window of {params.window_size} bytes")
    if stated_size and params.content_size != len(body):
        sys.exit(f"{name}: frame states {params.content_size} bytes, the body has {len(body)}")
    reader = zstandard.ZstdDecompressor(max_window_size=1 << 21).stream_reader(frame, read_across_frames=True)
    got = reader.read(64 * len(value) + 1)
    if got != body:
        sys.exit(f"{name}: decompresses to {got.hex()}, not to the body {body.hex()}")
    print(f"{name}:", value.hex())

master = bytes(range(32))


def derive(context):
    return blake3.blake3(master, derive_key_context=context).digest()


print("master key:", master.hex())
chunk_id_key = derive("cryptstream store v1 2026-11-30 chunk id")
blob_key = derive("cryptstream store v1 2026-11-30 blob key")
file_hash_key = derive("cryptstream store v1 2026-11-30 file hash")
print("chunk id key:", chunk_id_key.hex())
print("blob key:", blob_key.hex())
print("file hash key:", file_hash_key.hex())
print("manifest key:", derive("cryptstream store v1 2026-11-30 manifest key").hex())
print("chunker seed:", derive("cryptstream store v1 2026-11-30 chunker seed")[:8].hex())
plaintext = b"cryptstream store test vector\n"
print("chunk plaintext:", plaintext.hex())
chunk_id = blake3.blake3(plaintext, key=chunk_id_key).digest()
print("chunk id:", chunk_id.hex())
salt = bytes(range(0xA0, 0xB0))
print("blob salt:", salt.hex())
aad = chunk_id + b"\x00" + struct.pack("<I", len(plaintext))
key = blake3.blake3(salt + aad, key=blob_key).digest()
nonce = bytes(11) + b"\x01"  # STREAM nonce of chunk 0, last flag set
print("chunk aad:", aad.hex())
print("chunk blob:", (salt + AESGCM(key).encrypt(nonce, plaintext, aad)).hex())
name = b"dir/file.txt"
mac = blake3.blake3(key=file_hash_key)
mac.update(b"cryptstream store file v1")
mac.update(struct.pack("<QBIqIQ", 0x0123456789ABCDEF, 1, 0o644, 1700000000, 5, len(plaintext)))
mac.update(struct.pack("<I", len(name)) + name + struct.pack("<I", 0))
mac.update(chunk_id + struct.pack("<I", len(plaintext)))
mac.update(struct.pack("<Q", 1))
file_mac = mac.digest()
print("file mac:", file_mac.hex())
print("snapshot key:", derive("cryptstream store v1 2026-12-02 snapshot key").hex())


def string(text):
    data = text.encode()
    return struct.pack("<I", len(data)) + data


uid = struct.pack("<Q", 0x0123456789ABCDEF)
snapshot = b"CSTSNAP1" + struct.pack("<I", 1)
snapshot += string("snapshots/00/000102030405060708090a0b0c0d0e0f")
snapshot += struct.pack("<q", 1700000000000000005) + string("host")
snapshot += struct.pack("<I", 1) + string("/home/u/dir")
snapshot += struct.pack("<I", 1) + string("daily")
snapshot += b"\x01" + string("dir/file.txt") + uid + file_mac
snapshot += b"\x02" + string("dir/link.txt") + uid + file_mac + string("dir/file.txt")
snapshot += b"\x00" + b"CSTSEND1" + struct.pack("<Q", 2)
print("snapshot plaintext:", snapshot.hex())
print("snapshot body:", snapshot[8:].hex())
check_compressed("snapshot v2 plaintext", b"CSTSNAP2", snapshot[8:])

blob_len = 16 + len(plaintext) + 16
index = struct.pack("<I", 1) + chunk_id + struct.pack("<QIIB", 8, blob_len, len(plaintext), 0)
print("pack index plaintext:", index.hex())
check_compressed("pack index v2 plaintext", b"", index, stated_size=True)

# The manifest of that one record (stored at 1700000001), second layout:
# no mac; file count, then the record, then its chunk.
manifest = struct.pack("<Q", 1)
manifest += struct.pack("<QBIqIQqQ", 0x0123456789ABCDEF, 1, 0o644, 1700000000, 5, len(plaintext), 1700000001, 1)
manifest += struct.pack("<I", len(name)) + name + struct.pack("<I", 0)
manifest += chunk_id + struct.pack("<I", len(plaintext))
print("manifest body:", manifest.hex())
check_compressed("manifest v2 plaintext", b"CSTMAN02", manifest)
