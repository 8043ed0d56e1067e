"""Numbered schema migrations, SQLite and PostgreSQL side by side.

Each migration is a list of statements per dialect, applied once in order inside one
transaction and recorded in ``schema_migrations``. A migration is never edited after it
has shipped; a change to the schema is a new migration at the end of :data:`MIGRATIONS`.
Full-text search is dialect-specific: an FTS5 index kept by triggers on SQLite, a
generated ``tsvector`` column with a GIN index on PostgreSQL.
"""

from __future__ import annotations

import time

from sqlalchemy import Connection, text

Migration = dict[str, list[str]]

_CONVERSATIONS_V1 = """
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    system TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0
)"""

_MESSAGES_COLUMNS = """
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL DEFAULT '',
    thinking TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL,
    partial BOOLEAN NOT NULL DEFAULT FALSE,
    done_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER"""

_COMMON_INDEXES = [
    "CREATE INDEX conversations_updated ON conversations (updated_at DESC)",
    "CREATE INDEX messages_conversation ON messages (conversation_id, id)",
]

MIGRATIONS: list[Migration] = [
    {
        "sqlite": [
            _CONVERSATIONS_V1,
            f"CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT,{_MESSAGES_COLUMNS})",
            *_COMMON_INDEXES,
            "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', "
            "content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
            "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
            "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END",
            "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
            "INSERT INTO messages_fts(messages_fts, rowid, content) "
            "VALUES ('delete', old.id, old.content); END",
            "CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN "
            "INSERT INTO messages_fts(messages_fts, rowid, content) "
            "VALUES ('delete', old.id, old.content); "
            "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END",
            "CREATE VIRTUAL TABLE conversations_fts USING fts5(title, content='conversations', "
            "content_rowid='rowid', tokenize='unicode61 remove_diacritics 2')",
            "CREATE TRIGGER conversations_fts_insert AFTER INSERT ON conversations BEGIN "
            "INSERT INTO conversations_fts(rowid, title) VALUES (new.rowid, new.title); END",
            "CREATE TRIGGER conversations_fts_delete AFTER DELETE ON conversations BEGIN "
            "INSERT INTO conversations_fts(conversations_fts, rowid, title) "
            "VALUES ('delete', old.rowid, old.title); END",
            "CREATE TRIGGER conversations_fts_update AFTER UPDATE OF title ON conversations "
            "BEGIN INSERT INTO conversations_fts(conversations_fts, rowid, title) "
            "VALUES ('delete', old.rowid, old.title); "
            "INSERT INTO conversations_fts(rowid, title) VALUES (new.rowid, new.title); END",
        ],
        "postgresql": [
            _CONVERSATIONS_V1.replace(
                "message_count INTEGER NOT NULL DEFAULT 0",
                "message_count INTEGER NOT NULL DEFAULT 0,\n    search tsvector GENERATED "
                "ALWAYS AS (to_tsvector('simple', title)) STORED",
            ),
            "CREATE TABLE messages (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            f"{_MESSAGES_COLUMNS},\n    search tsvector GENERATED ALWAYS AS "
            "(to_tsvector('simple', content)) STORED)",
            *_COMMON_INDEXES,
            "CREATE INDEX messages_search ON messages USING GIN (search)",
            "CREATE INDEX conversations_search ON conversations USING GIN (search)",
        ],
    },
]


# 2: principals (access control): users, their API keys, OAuth2 clients, revoked token
# ids. The same SQL on both databases.
_PRINCIPALS = [
    "CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
    "password_hash TEXT NOT NULL DEFAULT '', role TEXT NOT NULL DEFAULT 'user', "
    "disabled BOOLEAN NOT NULL DEFAULT FALSE, created_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE api_keys (id TEXT PRIMARY KEY, "
    "user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE, "
    "name TEXT NOT NULL DEFAULT '', hash TEXT NOT NULL, scopes TEXT NOT NULL DEFAULT '', "
    "models TEXT NOT NULL DEFAULT '', created_at DOUBLE PRECISION NOT NULL, "
    "expires_at DOUBLE PRECISION, last_used_at DOUBLE PRECISION, revoked_at DOUBLE PRECISION)",
    "CREATE INDEX api_keys_user ON api_keys (user_id)",
    "CREATE TABLE oauth_clients (id TEXT PRIMARY KEY, "
    "owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE, "
    "name TEXT NOT NULL DEFAULT '', secret_hash TEXT NOT NULL, sealed_secret TEXT NOT NULL, "
    "scopes TEXT NOT NULL DEFAULT '', models TEXT NOT NULL DEFAULT '', "
    "created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION)",
    "CREATE TABLE revoked_tokens (jti TEXT PRIMARY KEY, "
    "expires_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION NOT NULL)",
]
MIGRATIONS.append({"sqlite": _PRINCIPALS, "postgresql": _PRINCIPALS})

# 3: conversations belong to a principal (NULL: made while access control was off; the
# first admin adopts them when access control comes on)
_OWNERS = [
    "ALTER TABLE conversations ADD COLUMN owner TEXT",
    "CREATE INDEX conversations_owner ON conversations (owner, updated_at DESC)",
]
MIGRATIONS.append({"sqlite": _OWNERS, "postgresql": _OWNERS})

# 4: web UI sessions, by the keyed hash of their cookie
_SESSIONS = [
    "CREATE TABLE sessions (id TEXT PRIMARY KEY, "
    "user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE, csrf TEXT NOT NULL, "
    "created_at DOUBLE PRECISION NOT NULL, last_seen_at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX sessions_user ON sessions (user_id)",
]
MIGRATIONS.append({"sqlite": _SESSIONS, "postgresql": _SESSIONS})

# 5: quotas. Usage records are the append-only ledger (one row per model operation, its
# id made by the server, so a retried write cannot charge twice; the request id beside
# it); per-scope limits; budgets; a user's team.
_USAGE = [
    "CREATE TABLE usage_records (id TEXT PRIMARY KEY, request_id TEXT NOT NULL, "
    "created_at DOUBLE PRECISION NOT NULL, "
    "day TEXT NOT NULL, principal TEXT NOT NULL, user_id TEXT, key_id TEXT, client_id TEXT, "
    "team TEXT, api TEXT NOT NULL, route TEXT NOT NULL, kind TEXT NOT NULL, "
    "model TEXT NOT NULL, served TEXT NOT NULL, backend TEXT NOT NULL, "
    "stream BOOLEAN NOT NULL, prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, "
    "cached_tokens BIGINT NOT NULL, cost_micros BIGINT NOT NULL, status TEXT NOT NULL, "
    "http_status INTEGER NOT NULL, latency_ms DOUBLE PRECISION NOT NULL, "
    "ttft_ms DOUBLE PRECISION)",
    "CREATE INDEX usage_created ON usage_records (created_at)",
    "CREATE INDEX usage_user ON usage_records (user_id, created_at)",
    "CREATE INDEX usage_key ON usage_records (key_id, created_at)",
    "CREATE INDEX usage_client ON usage_records (client_id, created_at)",
    "CREATE INDEX usage_team ON usage_records (team, created_at)",
    "CREATE INDEX usage_principal ON usage_records (principal, created_at)",
    "CREATE TABLE quotas (scope TEXT PRIMARY KEY, requests_per_minute INTEGER, "
    "tokens_per_minute INTEGER, concurrent_requests INTEGER, "
    "updated_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE budgets (id TEXT PRIMARY KEY, scope TEXT NOT NULL, period TEXT NOT NULL, "
    "amount_micros BIGINT NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
    "UNIQUE (scope, period))",
    "ALTER TABLE users ADD COLUMN team TEXT",
]
MIGRATIONS.append({"sqlite": _USAGE, "postgresql": _USAGE})

# 6: the usage indexes on a scope column hold only the records that have one. Most
# records leave most of them empty (an anonymous caller: all four), and an index entry
# per empty column was a quarter of what writing a record cost.
_SCOPE_INDEXES = {"user_id": "user", "key_id": "key", "client_id": "client", "team": "team"}
_USAGE_PARTIAL = [
    statement
    for column, name in _SCOPE_INDEXES.items()
    for statement in (
        f"DROP INDEX usage_{name}",
        f"CREATE INDEX usage_{name} ON usage_records ({column}, created_at) "
        f"WHERE {column} IS NOT NULL",
    )
]
MIGRATIONS.append({"sqlite": _USAGE_PARTIAL, "postgresql": _USAGE_PARTIAL})

# 7: which level of the response cache answered a request (l1, l2), NULL: none did
_USAGE_CACHE = ["ALTER TABLE usage_records ADD COLUMN cache TEXT"]
MIGRATIONS.append({"sqlite": _USAGE_CACHE, "postgresql": _USAGE_CACHE})

# 8: the audit trail (storage/audit.py): one row per record, keyed by replica and seq,
# its canonical JSON and hash beside the columns the filters use; retention's anchors
_AUDIT = [
    "CREATE TABLE audit_log (replica TEXT NOT NULL, seq BIGINT NOT NULL, "
    "time_us BIGINT NOT NULL, kind TEXT NOT NULL, request_id TEXT NOT NULL, "
    "principal TEXT NOT NULL, principal_name TEXT NOT NULL, model TEXT, served TEXT, "
    "status INTEGER NOT NULL, hash TEXT NOT NULL, record TEXT NOT NULL, "
    "PRIMARY KEY (replica, seq))",
    "CREATE INDEX audit_time ON audit_log (time_us)",
    "CREATE INDEX audit_request ON audit_log (request_id)",
    "CREATE INDEX audit_principal ON audit_log (principal, time_us)",
    "CREATE INDEX audit_model ON audit_log (model, time_us)",
    "CREATE TABLE audit_anchors (replica TEXT NOT NULL, seq BIGINT NOT NULL, "
    "hash TEXT NOT NULL, pruned_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (replica, seq))",
]
MIGRATIONS.append({"sqlite": _AUDIT, "postgresql": _AUDIT})

# 9: files uploaded for the Batch API (their bytes are on disk, by SHA-256)
_FILES = [
    "CREATE TABLE files (id TEXT PRIMARY KEY, owner TEXT, purpose TEXT NOT NULL, "
    "filename TEXT NOT NULL, bytes BIGINT NOT NULL, sha256 TEXT NOT NULL, "
    "lines INTEGER NOT NULL DEFAULT 0, created_at BIGINT NOT NULL)",
    "CREATE INDEX files_owner ON files (owner, created_at)",
    "CREATE INDEX files_sha256 ON files (sha256)",
]
MIGRATIONS.append({"sqlite": _FILES, "postgresql": _FILES})

# 10: batches (storage/batches.py), with the lease of the replica working one, and one
# row per finished line, which is how a batch resumes without running a line again
_BATCHES = [
    "CREATE TABLE batches (id TEXT PRIMARY KEY, owner TEXT, principal TEXT NOT NULL, "
    "endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL, completion_window TEXT NOT NULL, "
    "status TEXT NOT NULL, metadata TEXT, errors TEXT, output_file_id TEXT, "
    "error_file_id TEXT, total INTEGER NOT NULL DEFAULT 0, "
    "completed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, "
    "input_tokens BIGINT NOT NULL DEFAULT 0, output_tokens BIGINT NOT NULL DEFAULT 0, "
    "created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, in_progress_at BIGINT, "
    "finalizing_at BIGINT, completed_at BIGINT, failed_at BIGINT, expired_at BIGINT, "
    "cancelling_at BIGINT, cancelled_at BIGINT, "
    "lease_owner TEXT, lease_until DOUBLE PRECISION)",
    "CREATE INDEX batches_owner ON batches (owner, created_at)",
    "CREATE INDEX batches_status ON batches (status)",
    "CREATE TABLE batch_lines (batch_id TEXT NOT NULL, line INTEGER NOT NULL, "
    "custom_id TEXT, ok INTEGER NOT NULL, result TEXT NOT NULL, "
    "PRIMARY KEY (batch_id, line))",
]
MIGRATIONS.append({"sqlite": _BATCHES, "postgresql": _BATCHES})

# 11: the files' bytes in the database, in parts, for replicas that share no disk
MIGRATIONS.append({
    "sqlite": ["CREATE TABLE file_blobs (sha256 TEXT NOT NULL, part INTEGER NOT NULL, "
               "data BLOB NOT NULL, PRIMARY KEY (sha256, part))"],
    "postgresql": ["CREATE TABLE file_blobs (sha256 TEXT NOT NULL, part INTEGER NOT NULL, "
                   "data BYTEA NOT NULL, PRIMARY KEY (sha256, part))"],
})  # fmt: skip


def migrate(conn: Connection, dialect: str) -> int:
    """Apply every migration not yet recorded; return the schema version."""
    if dialect == "postgresql":
        # replicas starting together: one migrates, the others wait for it. First of
        # all: two CREATE TABLE IF NOT EXISTS at once on an empty database collide
        # (a duplicate key in pg_type), so the table is made under the lock too
        conn.execute(text("SELECT pg_advisory_xact_lock(7419020011)"))
    conn.execute(
        text(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
    )
    done = {row[0] for row in conn.execute(text("SELECT version FROM schema_migrations"))}
    for version, migration in enumerate(MIGRATIONS, start=1):
        if version in done:
            continue
        for statement in migration[dialect]:
            conn.exec_driver_sql(statement)
        conn.execute(
            text("INSERT INTO schema_migrations (version, applied_at) VALUES (:v, :t)"),
            {"v": version, "t": time.time()},
        )
    return len(MIGRATIONS)
