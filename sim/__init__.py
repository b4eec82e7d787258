"""sim: the deterministic crash simulator for durable workflows (under construction)."""
