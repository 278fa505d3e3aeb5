#!/usr/bin/env python3
"""Recomputes the test vectors of docs/STORE.md with an independent
implementation (pip install blake3 cryptography) and prints them."""
import struct

import blake3
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

master = bytes(range(32))


def derive(context):
    return blake3.blake3(master, derive_key_context=context).digest()


chunk_id_key = derive("cryptstream store v1 2026-11-30 chunk id")
blob_key = derive("cryptstream store v1 2026-11-30 blob key")
file_hash_key = derive("cryptstream store v1 2026-11-30 file hash")
print("chunk id key:", chunk_id_key.hex())
print("blob key:", blob_key.hex())
print("file hash key:", file_hash_key.hex())
print("manifest key:", derive("cryptstream store v1 2026-11-30 manifest key").hex())
print("chunker seed:", derive("cryptstream store v1 2026-11-30 chunker seed")[:8].hex())
plaintext = b"cryptstream store test vector\n"
chunk_id = blake3.blake3(plaintext, key=chunk_id_key).digest()
print("chunk id:", chunk_id.hex())
salt = bytes(range(0xA0, 0xB0))
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
