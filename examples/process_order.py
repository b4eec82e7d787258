"""Charge a payment, then email a receipt: the order workflow of durable's README.

The two "external services" here are fakes that behave like real ones where it
matters: every effect they apply is recorded in a ledger file (so it survives a
crash of this process, as a real payment provider's records would), and a
request that repeats an idempotency key gets the first response back instead of
a second charge.

Run it twice: the second run attaches to the finished run ``order-1`` and
prints the same payment id without charging again.

    python examples/process_order.py
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import durable


class FakeService:
    """A stand-in for an external API that honours idempotency keys.

    Every applied effect is one JSON line in ``<ledger dir>/<name>.jsonl``,
    fsynced before the response is returned.
    """

    def __init__(self, name: str, ledger_dir: str | os.PathLike[str]) -> None:
        self.name = name
        self.path = Path(ledger_dir) / f"{name}.jsonl"

    def effects(self) -> list[dict[str, Any]]:
        """Every effect applied so far, in order."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def apply(self, key: str, request: dict[str, Any]) -> dict[str, Any]:
        """Apply ``request`` once per idempotency ``key``; repeat the first response after."""
        for effect in self.effects():
            if effect["key"] == key:
                return dict(effect["response"])
        response = {"id": f"{self.name[:3]}_{hashlib.sha256(key.encode()).hexdigest()[:10]}"}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as ledger:
            ledger.write(json.dumps({"key": key, "request": request, "response": response}) + "\n")
            ledger.flush()
            os.fsync(ledger.fileno())
        return response


LEDGERS = os.environ.get("EXAMPLE_LEDGERS", ".durable/example-services")
payments = FakeService("payments", LEDGERS)
mailer = FakeService("mailer", LEDGERS)


@durable.activity(retries=3, timeout="30s", initial_backoff="500ms")
def charge_payment(amount: int, token: str) -> str:
    """Charge the card; the idempotency key makes a retried charge harmless."""
    key = durable.activity_info().idempotency_key
    return str(payments.apply(key, {"amount": amount, "token": token})["id"])


@durable.activity
async def send_email(user: str, message: str) -> None:
    """Send the receipt (an async activity: it runs on trio, cancelled on timeout)."""
    mailer.apply(durable.activity_info().idempotency_key, {"to": user, "message": message})


@durable.workflow
def process_order(customer: str, amount: int, card_tok: str):  # type: ignore[no-untyped-def]
    """Charge, then send the receipt; return the payment id."""
    payment_id = yield charge_payment(amount, card_tok)
    yield send_email(customer, "Receipt for " + payment_id).with_options(retries=5)
    return payment_id


if __name__ == "__main__":
    print(durable.run(process_order, "alice", 4200, "tok_visa", id="order-1"))
