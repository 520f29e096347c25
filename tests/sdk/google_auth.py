"""google-auth in a pod: the VM's default service account token from the metadata server.

`compute_engine.Credentials().refresh()` GETs
/computeMetadata/v1/instance/service-accounts/default/?recursive=true (email, scopes), then
.../default/token?scopes=... GCE_METADATA_HOST (and GCE_METADATA_IP) name the server by address,
so no name is resolved.

Prints `token=... email=... expiry=<unix> now=<unix>` and exits 0, or
`error: <Class>: <message>` and exits 2.
"""

import calendar
import sys
import time

import google.auth.exceptions
from google.auth import compute_engine
from google.auth.transport.requests import Request


def main() -> int:
    credentials = compute_engine.Credentials()
    try:
        credentials.refresh(Request())
    except google.auth.exceptions.GoogleAuthError as e:  # RefreshError, TransportError
        message = " ".join(str(e).split())
        print(f"error: {type(e).__name__}: {message}")
        return 2
    expiry = calendar.timegm(credentials.expiry.utctimetuple())
    print(
        f"token={credentials.token} email={credentials.service_account_email} "
        f"expiry={expiry} now={int(time.time())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
