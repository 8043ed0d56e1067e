"""The append-only audit trail: one record per model call and per administrative
action, chained by hashes, spooled to a local file and drained into the database.

* ``record.py``: the record, its canonical form, the hash chain, the keyed hashes;
* ``spool.py``: the local spool (one JSON line per record, group fsync);
* ``drain.py``: the spool into SQL in batches (``storage/audit.py``), retention;
* ``policy.py``: the ``Audit`` policy, outermost in the gateway's chain;
* ``verify.py``: walking the chain for gaps and edits;
* ``trail.py``: all of it as the server runs it (``build_audit``);
* ``settings.py``: ``[audit]``.

See docs/observability.md#audit-trail. Nothing here is imported by ``llmux.config`` but
the settings, so this module imports nothing.
"""
