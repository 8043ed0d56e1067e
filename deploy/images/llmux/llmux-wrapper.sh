#!/bin/sh
# `llmux` on the image's PATH: the same LLMUX_*_FILE secrets as the server's own start,
# so `docker exec CONTAINER llmux users list` finds the database the server uses.
exec llmux-entrypoint /opt/llmux/bin/llmux "$@"
