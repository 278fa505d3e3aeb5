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
print("file mac:", mac.digest().hex())
