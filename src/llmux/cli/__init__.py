"""Command line: thin commands over the HTTP API, and `serve`."""
