"""An API client written against Python's authlib (an OAuth 2.0 library of
another ecosystem): client credentials with client_secret_basic and with
client_secret_post, then calls to the admin API with the token it got.

Usage: authlib_client.py BASE_URL CA_PEM CLIENT_ID CLIENT_SECRET
Prints one JSON object with what it saw.
"""
import json
import sys

from authlib.integrations.requests_client import OAuth2Session

base, ca, client_id, secret = sys.argv[1:5]
out = {}
for method in ("client_secret_basic", "client_secret_post"):
    s = OAuth2Session(client_id, secret, token_endpoint_auth_method=method, scope="policy")
    token = s.fetch_token(base + "/oauth/token", grant_type="client_credentials", verify=ca)
    r = s.get(base + "/api/v1/status", verify=ca)
    out[method] = {
        "token_type": token["token_type"],
        "expires_in": token["expires_in"],
        "scope": token["scope"],
        "status": r.status_code,
        "revision": r.json().get("revision"),
    }
r = s.post(base + "/api/v1/groups", json={"name": "from-authlib"}, verify=ca)
out["create"] = {"status": r.status_code, "etag": r.headers.get("ETag")}
bad = OAuth2Session(client_id, "sls_wrong", token_endpoint_auth_method="client_secret_basic")
try:
    bad.fetch_token(base + "/oauth/token", grant_type="client_credentials", verify=ca)
    out["wrong_secret"] = "accepted"
except Exception as e:  # authlib raises OAuthError with the RFC 6749 error code
    out["wrong_secret"] = getattr(e, "error", type(e).__name__)
print(json.dumps(out))
