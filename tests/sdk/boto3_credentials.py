"""boto3 in a pod: the instance profile role's credentials from IMDSv2.

The environment leaves botocore only its instance metadata provider (no keys, no profile, no
config or credentials file, no container or web-identity variables); the region comes from
AWS_DEFAULT_REGION. botocore PUTs /latest/api/token, then GETs
/latest/meta-data/iam/security-credentials/ and the role under it.

Prints `method=iam-role access_key_id=... expiry=<unix> now=<unix>` and exits 0, or
`error: <Class>: <message>` and exits 2.
"""

import calendar
import sys
import time

import boto3
from botocore.exceptions import BotoCoreError, NoCredentialsError


def main() -> int:
    session = boto3.Session()
    try:
        credentials = session.get_credentials()
        if credentials is None:
            # What any client call would raise: no provider in the chain found credentials.
            raise NoCredentialsError()
        frozen = credentials.get_frozen_credentials()
    except BotoCoreError as e:
        print(f"error: {type(e).__name__}: {e}")
        return 2
    expiry = getattr(credentials, "_expiry_time", None)
    expiry = calendar.timegm(expiry.utctimetuple()) if expiry else 0
    print(
        f"method={credentials.method} access_key_id={frozen.access_key} "
        f"region={session.region_name} expiry={expiry} now={int(time.time())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
