"""Payload codecs to pass as a store's ``codec=``: compression and authenticated encryption.

A payload codec turns the bytes of every value a store journals (arguments,
results, side-effect values, signal payloads) into other bytes and back; names,
ids, times and error messages stay clear, so ``durable ls`` and ``show`` work
without the key (payloads show as ``<encoded by NAME>``). Give a list to apply
several in order (compress first, then encrypt: encrypted bytes do not compress)::

    import durable
    from durable.codecs import AesGcm, Zlib

    codec = [Zlib(), AesGcm({"2026-12": key})]
    store = durable.FileStore(".durable", codec=codec)

Any object with a ``name`` and ``encode``/``decode`` from bytes to bytes is a codec
(:class:`~durable.lowlevel.PayloadCodec`). A codec is found again by its name, which is
written beside each payload: keep a codec (and every key it used) for as long as
journals written with it are kept. See "Encrypting and compressing payloads"
(``docs/howto/codecs.md``).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from typing import Any

from ._core.values import MAX_VALUE

__all__ = ["AesGcm", "Zlib"]


class Zlib:
    """Compression with the standard library's zlib (raw DEFLATE).

    A payload shorter than ``min_size``, or one that compression would not make
    smaller, is stored as it is (behind one byte that says so): compressing a
    short value costs microseconds and makes it longer.

    Args:
        level: 0 (none) to 9 (smallest, slowest); 6 by default, as zlib's.
        min_size: payloads shorter than this many bytes are not compressed.
    """

    name = "zlib"

    def __init__(self, level: int = 6, *, min_size: int = 128) -> None:
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
            raise ValueError(f"level must be an int from 0 to 9 (got {level!r})")
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
            raise ValueError(f"min_size must be an int of 0 or more (got {min_size!r})")
        self.level = level
        self.min_size = min_size

    def __repr__(self) -> str:
        return f"Zlib(level={self.level}, min_size={self.min_size})"

    def encode(self, data: bytes) -> bytes:
        """``data`` compressed (or stored, when that is as small)."""
        if len(data) >= self.min_size:
            deflater = zlib.compressobj(self.level, zlib.DEFLATED, -15)
            packed = deflater.compress(data) + deflater.flush()
            if len(packed) < len(data):
                return b"\x01" + packed
        return b"\x00" + data

    def decode(self, data: bytes) -> bytes:
        """The bytes ``encode`` was given; a payload can never inflate to more than a
        journal value may hold (a crafted journal cannot exhaust memory)."""
        if data[:1] == b"\x00":
            return data[1:]
        if data[:1] != b"\x01":
            raise ValueError("not a Zlib payload (unknown layout)")
        inflater = zlib.decompressobj(-15)
        out = inflater.decompress(data[1:], MAX_VALUE + 1)
        if len(out) > MAX_VALUE or inflater.unconsumed_tail:
            raise ValueError(f"decompresses to more than the {MAX_VALUE:,} bytes a value may hold")
        if not inflater.eof:
            raise ValueError("the compressed data is truncated")
        return out


# The layout of an AesGcm payload: a version byte, the key id (length-prefixed UTF-8),
# the 96-bit nonce, then the ciphertext with its 128-bit tag.
_AES_GCM_V1 = 1
_NONCE_SIZE = 12


class AesGcm:
    """Authenticated encryption with AES-GCM (the ``cryptography`` package), with key ids.

    Each payload is encrypted with the key ``current`` under a fresh random nonce,
    and carries that key's id, so keys rotate: add a new key, make it current, and
    keep the old ones for as long as journals they encrypted are kept. Decoding
    checks the authentication tag: a payload altered on disk, or read with the
    wrong key, is an error (:class:`~durable.PayloadCodecError`), never wrong data.

    Needs the ``encryption`` extra: ``pip install 'durable-yield[encryption]'``.

    Args:
        keys: key id -> key (16, 24 or 32 bytes: AES-128, -192 or -256). Key ids are
            short text written beside every payload (never the key): a date, a version.
        current: the id of the key that encrypts; with a single key, that key.
    """

    name = "aes-gcm"

    def __init__(self, keys: Mapping[str, bytes], *, current: str | None = None) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415 - an optional extra
        except ImportError:
            raise ImportError(
                "durable.codecs.AesGcm needs the cryptography package: "
                "pip install 'durable-yield[encryption]'"
            ) from None
        if not isinstance(keys, Mapping) or not keys:
            raise ValueError(
                "keys must be a non-empty mapping of key id -> key bytes, for example "
                f"AesGcm({{'2026-12': key}}) (got a {type(keys).__name__})"
            )
        self._ciphers: dict[str, Any] = {}
        for key_id, key in keys.items():
            self._check_key(key_id, key)
            self._ciphers[key_id] = AESGCM(bytes(key))
        if current is None:
            if len(keys) != 1:
                raise ValueError(f"with several keys, say which one encrypts: current= one of {sorted(keys)}")
            current = next(iter(keys))
        if current not in self._ciphers:
            raise ValueError(f"current={current!r} is not one of the key ids {sorted(keys)}")
        self.current = current

    @staticmethod
    def _check_key(key_id: object, key: object) -> None:
        if not isinstance(key_id, str) or not key_id or len(key_id.encode()) > 255:
            raise ValueError(f"a key id must be non-empty text of at most 255 bytes (got {key_id!r})")
        if isinstance(key, str):
            raise TypeError(
                f"the key {key_id!r} must be bytes, not text: bytes.fromhex(...) for a hex key, "
                "base64.b64decode(...) for a base64 one"
            )
        if not isinstance(key, bytes | bytearray) or len(key) not in (16, 24, 32):
            size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
            raise ValueError(f"the key {key_id!r} must be 16, 24 or 32 bytes (got {size})")

    @staticmethod
    def generate_key() -> bytes:
        """A new random 256-bit key (keep it in your secret store, not in the code)."""
        return os.urandom(32)

    def __repr__(self) -> str:  # never the keys
        return f"AesGcm(key ids {sorted(self._ciphers)}, current={self.current!r})"

    def encode(self, data: bytes) -> bytes:
        """``data`` encrypted with the current key."""
        key_id = self.current.encode()
        nonce = os.urandom(_NONCE_SIZE)
        sealed: bytes = self._ciphers[self.current].encrypt(nonce, data, None)
        return bytes([_AES_GCM_V1, len(key_id)]) + key_id + nonce + sealed

    def decode(self, data: bytes) -> bytes:
        """The bytes ``encode`` encrypted, with the key whose id they carry."""
        if len(data) < 2 or data[0] != _AES_GCM_V1:
            raise ValueError("not an AesGcm payload (unknown layout version)")
        end = 2 + data[1]
        key_id = data[2:end].decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise ValueError(
                f"it was encrypted with the key {key_id!r}, which is not among the keys given "
                f"({sorted(self._ciphers)}); add that key to AesGcm(keys=...)"
            )
        nonce, sealed = data[end : end + _NONCE_SIZE], data[end + _NONCE_SIZE :]
        try:
            plain: bytes = cipher.decrypt(nonce, sealed, None)
        except Exception:  # InvalidTag, or a truncated payload
            raise ValueError(
                f"authentication failed with the key {key_id!r}: that key is not the one that "
                "encrypted this payload, or the journal was altered"
            ) from None
        return plain
