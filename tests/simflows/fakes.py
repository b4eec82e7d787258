"""An in-memory outside world: a payment/e-mail service that survives simulated crashes.

The simulator keeps it outside the simulated processes, as a real service
would be: a crash of the workflow's process does not undo an effect it already
applied. ``reset`` goes to ``sim.Simulator(before_each=...)`` and ``problem`` to
``after_each=``.
"""

from __future__ import annotations

from collections import Counter


class Ledger:
    """Effects applied to the outside world, in order.

    ``apply`` honours an idempotency key (a second call with the same key
    returns the first call's receipt and applies nothing); ``append`` does not.
    """

    def __init__(self, expected: tuple[str, ...] = ()) -> None:
        self.expected = expected
        self.reset()

    def reset(self) -> None:
        self.effects: list[tuple[str, str]] = []  # (kind, description)
        self.receipts: dict[str, str] = {}  # idempotency key -> receipt
        self.calls = 0

    def apply(self, key: str, kind: str, what: str) -> str:
        """Apply an effect once per idempotency key; return its receipt."""
        self.calls += 1
        if key not in self.receipts:
            self.effects.append((kind, what))
            self.receipts[key] = f"{kind}-{len(self.effects)}"
        return self.receipts[key]

    def append(self, kind: str, what: str) -> str:
        """Apply an effect every time it is called (no idempotency key)."""
        self.calls += 1
        self.effects.append((kind, what))
        return f"{kind}-{len(self.effects)}"

    def duplicates(self) -> str | None:
        """A description of every effect applied more than once, or None."""
        counts = Counter(self.effects)
        twice = [f"{kind} {what!r} applied {n} times" for (kind, what), n in counts.items() if n > 1]
        return "; ".join(twice) or None

    def problem(self) -> str | None:
        """For ``after_each``: None when each expected effect was applied exactly once."""
        duplicated = self.duplicates()
        if duplicated is not None:
            return duplicated
        kinds = sorted(kind for kind, _ in self.effects)
        if self.expected and kinds != sorted(self.expected):
            return f"expected effects {sorted(self.expected)}, the outside world holds {kinds}"
        return None
