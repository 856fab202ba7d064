"""The catalogue of hosted agent instance shapes: Buildkite's documented list of the shapes its
hosted agents run on (names, machine type, architecture, CPUs, memory and disk).

A queue is hosted if and only if it has one of these shapes. The list lives here, on the server,
so that clients can read it instead of hard-coding it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceShape:
    name: str
    machine_type: str  # "linux" | "macos"
    architecture: str  # "amd64" | "arm64"
    size: str
    cpu: int
    memory: int  # GB
    disk: int  # GB


def _linux(arch: str, size: str, cpu: int, memory: int, disk: int) -> InstanceShape:
    return InstanceShape(
        f"LINUX_{arch.upper()}_{cpu}X{memory}", "linux", arch, size, cpu, memory, disk
    )


_LINUX_SIZES = [
    ("SMALL", 2, 4, 47),
    ("MEDIUM", 4, 16, 95),
    ("LARGE", 8, 32, 158),
    ("EXTRA_LARGE", 16, 64, 284),
    ("EXTRA_EXTRA_LARGE", 32, 128, 544),
    ("THREE_XL", 64, 256, 1056),
]

SHAPES: dict[str, InstanceShape] = {
    shape.name: shape
    for shape in [
        *(_linux(arch, *size) for arch in ("amd64", "arm64") for size in _LINUX_SIZES),
        InstanceShape("MACOS_ARM64_M4_6X28", "macos", "arm64", "MEDIUM", 6, 28, 182),
        InstanceShape("MACOS_ARM64_M4_12X56", "macos", "arm64", "LARGE", 12, 56, 294),
    ]
}

CHOICES = [(name, name) for name in SHAPES]


def get(name: str) -> InstanceShape:
    return SHAPES[name]
