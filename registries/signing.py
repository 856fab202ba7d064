"""Registry tokens as compact JWS, ES256 (``registries.tokens`` decides what they say; this module
signs them): what ``jwt.encode`` makes, byte for byte, without its per-call work. The header of
every token a key signs (its certificate chain is ~90 % of the signing input) is encoded and fed
to SHA-256 once per key, each token hashing only its payload; base64url and the ``jti`` come
from C calls alone. PyJWT still decodes these tokens in the tests, and Distribution accepts them.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from jwt.utils import base64url_encode

from registries.key_store import key_store

#: ``uuid.uuid4()``'s version (4) and variant (RFC 4122) bits, over 128 random bits.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (4 << 76) | (0x8000 << 48)


def new_jti() -> str:
    """``uuid.uuid4().hex`` (a token's ``jti``) from the same 16 random bytes, without building a
    ``UUID``, whose checks cost as much as the bytes."""
    random = int.from_bytes(os.urandom(16), "big")
    return f"{random & _UUID4_CLEAR | _UUID4_SET:032x}"


#: ES256: ECDSA on P-256 (the curve ``registries.keys`` makes its keys on) over SHA-256, of a
#: digest ``sign`` computes (``_Header``).
_ECDSA_PREHASHED = ec.ECDSA(Prehashed(hashes.SHA256()))
_P256_BYTES = 32
#: ``json.dumps(claims, separators=(",", ":"))``, with the encoder built once rather than for
#: every token.
_claims_json = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True)
class _Header:
    """The JWS header of every token a key signs, encoded once per key (PyJWT's encoding of the
    same header, byte for byte): its certificate chain makes it most of the token. ``digest``
    is SHA-256 fed with the signing input's part that never changes (the header and its dot),
    so each token hashes only its payload (``copy()`` of a fed hash is its state)."""

    segment: bytes
    digest: Any  # hashlib's SHA-256 object (``hashlib._Hash``)


@functools.lru_cache(maxsize=4)
def _header(kid: str, x5c: tuple[str, ...]) -> _Header:
    header = {"alg": "ES256", "kid": kid, "typ": "JWT", "x5c": list(x5c)}
    segment = base64url_encode(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())
    return _Header(segment, hashlib.sha256(segment + b"."))


_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def b64url(data: bytes) -> bytes:
    """``jwt.utils.base64url_encode(data)`` (URL-safe base64 without padding) in three C calls,
    without the three Python functions around them: each token encodes its payload and its
    signature."""
    return binascii.b2a_base64(data, newline=False).translate(_URL_SAFE).rstrip(b"=")


def sign(claims: dict[str, Any]) -> str:
    """A compact JWS of ``claims`` signed with the current key (ES256): what ``jwt.encode``
    makes, without encoding (nor hashing) the same header again for every token, and with the
    signature converted from DER to JWS's ``r || s`` as PyJWT's ``ECAlgorithm.sign`` does,
    minus its per-call curve and hash objects."""
    key = key_store().load().current
    header = _header(key.kid, tuple(key.x5c))
    payload = b64url(_claims_json(claims).encode())
    digest = header.digest.copy()
    digest.update(payload)
    r, s = decode_dss_signature(key.private_key.sign(digest.digest(), _ECDSA_PREHASHED))
    signature = r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
    return b".".join((header.segment, payload, b64url(signature))).decode()
