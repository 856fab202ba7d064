"""A signing key another replica issued that this one has not loaded yet: ``rotated_key``.

Each web process signs with the keys in its ``REGISTRY_KEYS_DIR`` and looks at them again at most
once a second (``registries.keys``); on Kubernetes that folder is a Secret mounted read-only,
which reaches each pod on the kubelet's refresh (about a minute). Between a rotation and that
refresh, a replica that has the new key hands out refresh tokens signed with it, and a replica
that has not refused them: a stored ``docker login`` failed now and then behind a load balancer.

The registry has no such gap: it trusts the CA, and each token carries its key's certificate
(``x5c``). A refresh token that comes back is checked the same way when its key is unknown here,
for a key newer than this process's current one only (a rotation on its way): the certificate
must be issued by our CA, valid now, issued after the current key's (certificates say it to
the second: keys are rotated days apart), and be the key the token's ``kid`` names. An older
unknown key stays refused, as ``SigningKeys.accepted`` has it.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from registries.keys import SigningKey, libtrust_kid


def rotated_key(
    header: Mapping[str, Any], current: SigningKey, ca_certificate: Path, now: dt.datetime
) -> ec.EllipticCurvePublicKey | None:
    """The public key of the token's ``x5c`` certificate if it is a newer signing key of our CA
    (see the module); None otherwise."""
    chain = header.get("x5c")
    if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
        return None
    try:
        certificate = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
        certificate.verify_directly_issued_by(
            _ca(str(ca_certificate), ca_certificate.stat().st_mtime_ns)
        )
    except (ValueError, TypeError, InvalidSignature, OSError):
        return None
    public_key = certificate.public_key()
    if (
        not isinstance(public_key, ec.EllipticCurvePublicKey)
        or libtrust_kid(public_key) != header.get("kid")
        or not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc
        or certificate.not_valid_before_utc <= current.certificate.not_valid_before_utc
    ):
        return None
    return public_key


@functools.lru_cache(maxsize=4)
def _ca(path: str, mtime_ns: int) -> x509.Certificate:
    """The CA certificate at ``path``, read again only if the file changed."""
    return x509.load_pem_x509_certificate(Path(path).read_bytes())
