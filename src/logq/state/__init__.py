"""Durable delivery state: ranges, per-partition delivery state, events, the journal."""
