#!/bin/sh
# The llmux image's entry point: turns LLMUX_*_FILE variables into LLMUX_* (Docker and
# Kubernetes secrets are files: LLMUX_AUTH__ADMIN_PASSWORD_FILE=/run/secrets/admin_password
# sets LLMUX_AUTH__ADMIN_PASSWORD to that file's contents, trailing newlines removed),
# then runs the command (default: llmux serve).
set -eu
for var in $(env | sed -n 's/^\(LLMUX_[A-Za-z0-9_]*\)_FILE=.*/\1/p'); do
  file=""
  eval "file=\${${var}_FILE}"
  if eval "[ -n \"\${${var}+set}\" ]"; then
    echo "llmux-entrypoint: both $var and ${var}_FILE are set; set one" >&2
    exit 1
  fi
  if [ ! -r "$file" ]; then
    echo "llmux-entrypoint: ${var}_FILE=$file cannot be read by uid $(id -u)" \
      "(mount the secret readable for it)" >&2
    exit 1
  fi
  value=$(cat "$file")
  export "$var=$value"
  unset "${var}_FILE"
done
unset var file value
exec "$@"
