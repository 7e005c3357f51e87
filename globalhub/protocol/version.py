"""Bundle versions, with the exact semantics of upstream's ``pkg/bundle/version/version.go``.

A version is two unsigned 64-bit counters written ``"G.V"``:

* **Value** counts content changes (``incr``),
* **Generation** counts sends (``next``).

Within one agent run both only grow, which is why the component-wise ``newer_than_or_equal`` works. A restarted
agent starts again at ``0.0``; Generation 0 is the only restart signal the manager gets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UINT64_MAX = 2**64 - 1
# Both counters reset once they reach this value; upstream's exported ``MaxUint64`` (2^64-1-10) is unused.
OVERFLOW_THRESHOLD = UINT64_MAX - 100

_DECIMAL = re.compile(r"[0-9]+")


class VersionError(ValueError):
    """A version string that is not two unsigned decimal integers separated by one dot."""


@dataclass(slots=True)
class Version:
    """A mutable ``Generation.Value`` pair. ``incr``/``next`` mutate in place, as upstream's do."""

    generation: int = 0
    value: int = 0

    def __post_init__(self) -> None:
        for name in ("generation", "value"):
            number = getattr(self, name)
            if isinstance(number, bool) or not isinstance(number, int):
                raise VersionError(f"version {name} must be an int, got {type(number).__name__}")
            if not 0 <= number <= UINT64_MAX:
                raise VersionError(f"version {name} {number} is outside the unsigned 64-bit range")

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``"G.V"``; raise :class:`VersionError` with the reason when malformed."""
        if not isinstance(text, str):
            raise VersionError(f"version must be a string, got {type(text).__name__}")
        parts = text.split(".")
        if len(parts) != 2:
            raise VersionError(f"version {text[:60]!r} must have exactly two parts separated by '.'")
        numbers = []
        for label, part in zip(("generation", "value"), parts, strict=True):
            if not _DECIMAL.fullmatch(part):
                raise VersionError(f"version {text[:60]!r}: {label} {part[:40]!r} is not an unsigned decimal integer")
            if len(part.lstrip("0")) > len(str(UINT64_MAX)):  # before int(): Python refuses over 4,300 digits
                raise VersionError(f"version {text[:60]!r}: {label} overflows an unsigned 64-bit integer")
            number = int(part)
            if number > UINT64_MAX:
                raise VersionError(f"version {text[:60]!r}: {label} overflows an unsigned 64-bit integer")
            numbers.append(number)
        return cls(numbers[0], numbers[1])

    def __str__(self) -> str:
        return f"{self.generation}.{self.value}"

    def copy(self) -> Version:
        return Version(self.generation, self.value)

    def incr(self) -> None:
        """One more content change: Value + 1; both counters reset to 0 near overflow."""
        self.value += 1
        if self.value >= OVERFLOW_THRESHOLD:
            self.reset()

    def next(self) -> None:
        """One more send: Generation + 1; Value is kept (despite upstream's comment); reset near overflow."""
        self.generation += 1
        if self.generation >= OVERFLOW_THRESHOLD:
            self.reset()

    def reset(self) -> None:
        self.generation = 0
        self.value = 0

    def init_gen(self) -> bool:
        """True for Generation 0: the sender restarted."""
        return self.generation == 0

    def newer_than(self, other: Version | None) -> bool:
        """Lexicographic: Generation first, then Value. Equal versions are not newer."""
        if other is None:
            return True
        return (self.generation, self.value) > (other.generation, other.value)

    def newer_than_or_equal(self, other: Version | None) -> bool:
        """Component-wise: both Generation and Value at least the other's. ``5.3`` is not >= ``4.7``."""
        if other is None:
            return True
        return self.generation >= other.generation and self.value >= other.value

    def equal_value(self, other: Version | None) -> bool:
        return other is not None and self.value == other.value

    def newer_value_than(self, other: Version | None) -> bool:
        return other is None or self.value > other.value

    def newer_generation_than(self, other: Version | None) -> bool:
        """Generation >= the other's; the name is upstream's, equality included."""
        return other is None or self.generation >= other.generation
