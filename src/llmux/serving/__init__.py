"""Request-free orchestration per API family: parse -> convert -> prime -> stream or
collect, in that API's shape. Routes, the conversations API and (later) the Batch API
call the same functions; nothing here knows about HTTP."""
