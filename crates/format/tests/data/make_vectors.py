#!/usr/bin/env python3
"""Independent reference implementation of the cryptstream format, versions 1 and 2.

Writes vectors.json from docs/FORMAT.md alone, with Python's `cryptography`
and `argon2-cffi` packages (pip install cryptography argon2-cffi), so that the
Rust implementation is checked against a second implementation of the spec
rather than against itself. tests/vectors.rs reads the file.
"""
import hashlib
import hmac
import json
import struct

from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

MAGIC = bytes([0x89, 0x43, 0x53, 0x54, 0x0D, 0x0A, 0x1A, 0x0A])
UNKNOWN = 0xFFFFFFFFFFFFFFFF
# The large vector is too big to store: its plaintext is this pattern.
LARGE_PATTERN = "byte i = (i*31 + 7) % 251"
LARGE_LEN = 4 * 1024 * 1024 + 3000


def hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def expand(prk, info, n):
    return HKDFExpand(hashes.SHA256(), n, info).derive(prk)


def key_id(master):
    return expand(hkdf_extract(b"\0" * 32, master), b"cryptstream v1 key id", 16)


KINDS = {"file": 1, "symlink": 2, "hard link": 3}
NO_MTIME = 0xFFFFFFFF


def encrypt(master, kdf_block, kdf_id, cipher_id, chunk, plaintext, length_known, mode, salt,
            version=1, kind="file", mtime=None):
    prk = hkdf_extract(salt, master)
    payload = expand(prk, b"cryptstream v1 payload key", 32)
    mac_key = expand(prk, b"cryptstream v1 header mac key", 32)
    check = expand(prk, b"cryptstream v1 key check", 16)
    length = len(plaintext) if length_known else UNKNOWN
    if version == 1:
        head = MAGIC + bytes([1, cipher_id, kdf_id, 0]) + struct.pack("<IQII", chunk, length, mode, 0)
    else:
        seconds, nanos = mtime if mtime is not None else (0, NO_MTIME)
        head = MAGIC + bytes([2, cipher_id, kdf_id, KINDS[kind]])
        head += struct.pack("<IQIIq", chunk, length, mode, nanos, seconds) + b"\0" * 8
        assert len(head) == 48
    head += salt + kdf_block + check
    head += hmac.new(mac_key, head, hashlib.sha256).digest()
    assert len(head) == {1: 144, 2: 160}[version]
    aead = AESGCM(payload) if cipher_id == 1 else ChaCha20Poly1305(payload)
    pieces = [plaintext[i:i + chunk] for i in range(0, len(plaintext), chunk)] or [b""]
    out = head
    for i, piece in enumerate(pieces):
        nonce = b"\0\0\0" + struct.pack(">Q", i) + bytes([1 if i == len(pieces) - 1 else 0])
        out += aead.encrypt(nonce, piece, head)
    return out


def main():
    key = bytes(range(32))
    salt = bytes(range(0x40, 0x60))
    kid = key_id(key)
    key_block = kid + b"\0" * 16
    pattern = bytes(i % 251 for i in range(2049))
    vectors = []

    def add(name, plaintext, cipher_id=1, chunk=1024, known=True, mode=0o644, version=1, kind="file",
            mtime=None, store_bytes=True, **extra):
        if "passphrase" in extra:
            p = extra["argon2"]
            master = hash_secret_raw(extra["passphrase"].encode(), bytes.fromhex(extra["argon2_salt"]),
                                     time_cost=p["t"], memory_cost=p["m_kib"], parallelism=p["p"],
                                     hash_len=32, type=Type.ID, version=19)
            block = bytes.fromhex(extra["argon2_salt"]) + struct.pack("<IIII", p["m_kib"], p["t"], p["p"], 0)
            kdf_id = 2
        else:
            master, block, kdf_id = key, key_block, 1
        data = encrypt(master, block, kdf_id, cipher_id, chunk, plaintext, known, mode, salt,
                       version=version, kind=kind, mtime=mtime)
        entry = {
            "name": name,
            "version": version,
            "cipher": {1: "aes-256-gcm", 2: "chacha20-poly1305"}[cipher_id],
            "chunk_size": chunk,
            "length_in_header": known,
            "mode": mode,
            "salt": salt.hex(),
        }
        if version == 2:
            entry.update(kind=kind, mtime_seconds=mtime[0] if mtime else None,
                         mtime_nanos=mtime[1] if mtime else None)
        if store_bytes:
            entry.update(plaintext=plaintext.hex(), ciphertext=data.hex())
        else:
            entry.update(plaintext_pattern=LARGE_PATTERN, plaintext_len=len(plaintext),
                         ciphertext_len=len(data), ciphertext_sha256=hashlib.sha256(data).hexdigest())
        if kdf_id == 1:
            entry.update(key=key.hex(), key_id=kid.hex())
        else:
            entry.update(passphrase=extra["passphrase"], argon2_salt=extra["argon2_salt"], argon2=extra["argon2"])
        vectors.append(entry)

    add("empty file, AES-256-GCM", b"")
    add("one byte, AES-256-GCM", b"\x2a", mode=0o600)
    add("three chunks (2049 bytes, chunk 1024), AES-256-GCM", pattern)
    add("exactly one full chunk, length not in header (stream)", pattern[:1024], known=False)
    add("ChaCha20-Poly1305, short text", b"hello, cryptstream\n", cipher_id=2, mode=0o755)
    add("passphrase (Argon2id m=256 KiB t=2 p=1), two chunks", pattern[:1500],
        passphrase="correct horse battery staple", argon2_salt="000102030405060708090a0b0c0d0e0f",
        argon2={"m_kib": 256, "t": 2, "p": 1})

    # Version 2: entry kind and modification time in the header.
    when = (1700000000, 123456789)
    add("v2 one byte, mtime with nanoseconds, AES-256-GCM", b"\x2a", version=2, mtime=when)
    add("v2 three chunks (2049 bytes), mtime before the epoch", pattern, version=2, mode=0o755,
        mtime=(-1, 999999999))
    add("v2 symbolic link to ../some/target", b"../some/target", version=2, kind="symlink",
        mode=0o777, mtime=(1700000001, 0))
    add("v2 hard link to dir/first.txt", b"dir/first.txt", version=2, kind="hard link")
    add("v2 stream mode (length not in header), two full chunks, no mtime", pattern[:2048],
        version=2, known=False, mode=0)
    add("v2 ChaCha20-Poly1305, short text", b"hello, cryptstream\n", version=2, cipher_id=2,
        mode=0o600, mtime=when)
    add("v2 passphrase (Argon2id m=64 KiB t=1 p=1), two chunks", pattern[:1500], version=2,
        mtime=when, passphrase="correct horse battery staple",
        argon2_salt="f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", argon2={"m_kib": 64, "t": 1, "p": 1})
    large = bytes((i * 31 + 7) % 251 for i in range(LARGE_LEN))
    add("v2 large: 4 MiB + 3000 bytes, chunk 65536 (stored as a SHA-256)", large, version=2,
        chunk=65536, mtime=when, store_bytes=False)
    with open("vectors.json", "w") as f:
        json.dump({"source": "crates/format/tests/data/make_vectors.py (independent Python implementation of docs/FORMAT.md)",
                   "vectors": vectors}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
