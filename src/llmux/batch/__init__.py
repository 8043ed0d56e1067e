"""The Batch API: files (and, next, batches and their worker)."""
