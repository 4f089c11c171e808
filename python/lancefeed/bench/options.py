"""Object store options for ``lancefeed bench`` (``--storage-option KEY=VALUE``), and
keeping their secrets out of everything the benchmark prints or writes.

The options travel to each loader's process in its environment
(:data:`ENV`), never on its command line, where any user of the machine can read
them (``ps``); the settings written to ``results.json`` hold them with the values
of secret-looking keys replaced (:func:`redacted`), and the error messages that
come back from a loader's process pass through :func:`scrub` first.

Example:
    >>> opts = parse_storage_options(["aws_region=us-east-1", "aws_secret_access_key=hunter2"])
    >>> redacted(opts)
    {'aws_region': 'us-east-1', 'aws_secret_access_key': '***'}
    >>> scrub("refused hunter2", opts)
    'refused ***'
"""

from __future__ import annotations

import json
import os
from typing import Mapping

from lancefeed.source import parse_storage_options

__all__ = ["ENV", "from_env", "is_secret", "parse_storage_options", "redacted", "scrub", "to_env"]

# The worker's environment variable with the options as JSON.
ENV = "LANCEFEED_BENCH_STORAGE_OPTIONS"

# Key fragments whose values are credentials (aws_secret_access_key, aws_session_token,
# azure_storage_account_key, google_service_account_key, ...).
SECRET_WORDS = ("secret", "key", "token", "password", "session")
MASK = "***"


def is_secret(key: str) -> bool:
    """Whether the value of option ``key`` must never be shown.

    Example:
        >>> is_secret("aws_access_key_id"), is_secret("aws_endpoint")
        (True, False)
    """
    k = key.lower()
    return any(w in k for w in SECRET_WORDS)


def redacted(options: Mapping[str, str] | None) -> dict[str, str]:
    """``options`` with the values of secret-looking keys (:func:`is_secret`) masked.

    Example:
        >>> redacted({"aws_session_token": "abc", "region": "eu-west-1"})
        {'aws_session_token': '***', 'region': 'eu-west-1'}
    """
    return {k: MASK if is_secret(k) else v for k, v in (options or {}).items()}


def scrub(text: str, options: Mapping[str, str] | None) -> str:
    """``text`` with every secret value of ``options`` replaced by ``***``.

    Example:
        >>> scrub("key AKIA1 refused", {"aws_access_key_id": "AKIA1"})
        'key *** refused'
    """
    # Longest first: a secret that contains another is masked whole.
    for value in sorted((v for k, v in (options or {}).items() if is_secret(k) and v), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def to_env(options: Mapping[str, str] | None) -> dict[str, str]:
    """The environment a worker process gets: this one's, plus :data:`ENV` when
    there are options (and without it when there are none).

    Example:
        >>> ENV in to_env({"region": "x"}), ENV in to_env(None)
        (True, False)
    """
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if options:
        env[ENV] = json.dumps(dict(options))
    return env


def from_env() -> dict[str, str] | None:
    """The options the harness handed to this (worker) process, if any.

    Example:
        >>> from_env() is None or isinstance(from_env(), dict)
        True
    """
    text = os.environ.get(ENV)
    return dict(json.loads(text)) if text else None
