"""IP allow-lists of cluster agent tokens, as Buildkite has them: ``allowed_ip_addresses`` is one
string of space-separated IPv4 CIDR blocks (``"202.144.0.0/24 10.0.0.0/8"``), at most 24 of
them; ``0.0.0.0/0`` (the default) allows every address.

The list is enforced wherever the token is used, by one rule, ``allows``, which
``clusters.agent.authentication.agent_token_check_address`` applies: on the agent environment
endpoint and the job credential endpoint (``ClusterAgentTokenAuthentication``), and on the
registry token endpoint (``registries.views``, through ``clusters.interface``), for the token
itself and for any credential made from it. The caller's address is
``controlplane.api.client_ip.client_ip``.
"""

from __future__ import annotations

import ipaddress

from django.core.exceptions import ValidationError

#: The most CIDR blocks one token may list (Buildkite's limit).
MAX_BLOCKS = 24
#: Every address: the allow-list of a token that restricts nothing.
ANY_ADDRESS = "0.0.0.0/0"
FIELD = "allowed_ip_addresses"


def normalized(value: object) -> str:
    """``value`` as the allow-list a token stores: its blocks, in the order given, duplicates
    dropped, one space apart; a bare address is its ``/32``. Raises ``ValidationError`` for
    anything that is not 1 to 24 IPv4 CIDR blocks (a field's error: the model field's validator,
    and the services, attach it to ``allowed_ip_addresses``)."""
    if not isinstance(value, str):
        raise ValidationError("Must be a string of space-separated IPv4 CIDR blocks.")
    blocks = value.split()
    if not blocks:
        raise ValidationError(
            f"Give at least one IPv4 CIDR block ({ANY_ADDRESS} allows every address)."
        )
    networks: list[str] = []
    for block in blocks:
        network = _network(block)
        if network not in networks:
            networks.append(network)
    if len(networks) > MAX_BLOCKS:
        raise ValidationError(
            f"Give at most {MAX_BLOCKS} CIDR blocks; this list has {len(networks)}."
        )
    return " ".join(networks)


def validate(value: object) -> None:
    """The model field's validator: ``value`` is an allow-list ``normalized`` accepts."""
    normalized(value)


def _network(block: str) -> str:
    try:
        network = ipaddress.ip_network(block, strict=True)
    except ValueError as exc:
        try:  # a block with host bits set names a network; say which one
            loose = ipaddress.ip_network(block, strict=False)
        except ValueError:
            raise ValidationError(
                f"{block!r} is not an IPv4 CIDR block (such as 202.144.0.0/24)."
            ) from exc
        raise ValidationError(f"{block!r} has host bits set; the block is {loose}.") from exc
    if network.version != 4:
        raise ValidationError(f"{block!r} is IPv6; only IPv4 CIDR blocks are supported.")
    return str(network)


def allows(allowed_ip_addresses: str, address: str) -> bool:
    """Whether a token whose list is ``allowed_ip_addresses`` may be used from ``address`` (the
    caller's, as ``client_ip`` found it): whether the address is inside one of the blocks.
    ``0.0.0.0/0`` restricts nothing, whatever the address; otherwise only an IPv4 address (or an
    IPv4-mapped IPv6 one) can be inside a block, so an IPv6 caller, or an address that does not
    parse, is refused."""
    blocks = allowed_ip_addresses.split()
    if ANY_ADDRESS in blocks:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is None:
            return False
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(block, strict=False) for block in blocks)


def refusal(address: str) -> str:
    """The 403 message for a token used from ``address`` outside its allow-list."""
    return (
        f"This agent token may not be used from {address}: the address is outside the "
        "token's allowed_ip_addresses."
    )
