"""The cost model: per-op latency and energy on one GPU (roofline + power)."""
