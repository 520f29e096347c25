"""azure-identity in a pod: a managed-identity token for Azure Resource Manager from IMDS.

Prints `token=... expires_on=<unix> now=<unix>` and exits 0, or `error: <Class>: <message>` and
exits 2 when the SDK raises. `--no-retry` turns off the SDK's retries (five: by its settings some
36 s in all when IMDS does not answer), for the test of a pod whose packets are dropped.
"""

import sys
import time

from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential


def main() -> int:
    kwargs = {"retry_total": 0} if "--no-retry" in sys.argv[1:] else {}
    credential = ManagedIdentityCredential(**kwargs)
    try:
        token = credential.get_token("https://management.azure.com/.default")
    except ClientAuthenticationError as e:  # CredentialUnavailableError is one
        print(f"error: {type(e).__name__}: {e.message}")
        return 2
    print(f"token={token.token} expires_on={token.expires_on} now={int(time.time())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
