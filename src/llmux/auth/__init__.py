"""Access control: who may call llmux, and what they may do.

* :mod:`.secrets`: API key format, the server keyring (keyed hashes, token signing,
  sealed client secrets), password hashing (argon2).
* :mod:`.scopes`: the scopes, the scope every route requires, model patterns.
* :mod:`.tokens`: JWTs: issued by ``/oauth2/token``, signed by a client itself, or from
  an external identity provider (JWKS or PEM keys).
* :mod:`.control`: :class:`~.control.AccessControl`, which turns a request's
  credentials (a key, a token, a UI session) into a
  :class:`~llmux.core.context.Principal`;
* :mod:`.cache`: what it remembers: verified credentials, failed attempts;
* :mod:`.manage`: managing users, keys, clients and tokens, and issuing OAuth2 tokens.

The ASGI layer that applies it to every route is ``server/access.py``; the SQL rows
live in ``storage/principals.py``. See docs/security.md.
"""
