"""Storage: repositories behind small Protocols, one SQL implementation for SQLite
(the default, a file under ``$LLMUX_HOME``) and PostgreSQL (by URL, for deployments).

``database`` opens the engine and runs the numbered ``migrations``; each aggregate has
its own module (``conversations``).
"""
