"""Benchmark fixture for integration/bench's `ecr` section: moto's server
with ECR tokens that live as long as real ones.

moto 5.2.5's `GetAuthorizationToken` answers `expiresAt` 2015-01-01, so
pullauth, which never serves an expired token, fetches a new one for every
pull and caches none. To measure pulls with a *cached* token, this wrapper
patches `moto.ecr.responses.ECRResponse.get_authorization_token` to answer
`expiresAt` = now + BENCH_ECR_TOKEN_LIFETIME seconds (default 43200: 12 h,
the lifetime of a real ECR token) and then runs moto's server main with the
given arguments. The token itself (base64 "AWS:<account>-auth-token") is
moto's, unchanged. Each call is also noted on stderr, so the bench can count
the fetches moto served.

Run it with the moto venv's python:
  <venv>/bin/python moto_ecr_12h.py -H 127.0.0.1 -p PORT

This is a test fixture, not a model of ECR: nothing else about moto changes.
"""

import os
import sys
from datetime import datetime, timedelta, timezone

from moto.ecr import responses
from moto.server import main

LIFETIME = timedelta(seconds=float(os.environ.get("BENCH_ECR_TOKEN_LIFETIME", "43200")))
_original = responses.ECRResponse.get_authorization_token


def get_authorization_token(self):
    result = _original(self)
    expires_at = datetime.now(timezone.utc) + LIFETIME
    for item in result.result["authorizationData"]:
        item["expiresAt"] = expires_at
    sys.stderr.write("bench-moto: GetAuthorizationToken, expiresAt %s\n" % expires_at.isoformat())
    sys.stderr.flush()
    return result


responses.ECRResponse.get_authorization_token = get_authorization_token

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
