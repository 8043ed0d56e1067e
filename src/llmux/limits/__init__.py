"""Quotas: rate limits (``gcra.py``: one algorithm, on Redis or in process) and the
policy that applies them to model operations (``policy.py``). Budgets and usage
accounting come next (docs/quotas.md)."""
