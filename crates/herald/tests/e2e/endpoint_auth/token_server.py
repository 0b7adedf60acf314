"""An OAuth 2.0 authorization server (client credentials grant) and a protected webhook
receiver, built on Authlib's Flask integration, for Herald's endpoint authentication tests.

Usage: token_server.py PORT EXPIRES_IN

  POST /token        the token endpoint (client_secret_basic or client_secret_post)
  POST /hook         the receiver: needs a valid, unrevoked, unexpired bearer token with
                     scope webhook.send
  POST /token-503    a token endpoint that is down (503, temporarily_unavailable)
  POST /revoke-all   revokes every token issued so far (the test's "the receiver forgot it")
  GET  /stats        {"token_requests": n, "hook_ok": n, "hook_refused": n}
"""

import hmac
import secrets
import sys
import threading
import time

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from flask import Flask, jsonify

PORT = int(sys.argv[1])
EXPIRES_IN = int(sys.argv[2])

app = Flask(__name__)
app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"client_credentials": EXPIRES_IN}
lock = threading.Lock()
stats = {"token_requests": 0, "hook_ok": 0, "hook_refused": 0}


class Client(ClientMixin):
    def __init__(self, client_id, secret, method, scopes):
        self.client_id = client_id
        self.secret = secret
        self.method = method
        self.scopes = scopes

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        if not scope:
            return ""
        return " ".join(s for s in scope.split() if s in self.scopes)

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_client_secret(self, client_secret):
        return hmac.compare_digest(client_secret, self.secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return endpoint != "token" or method == self.method

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        return grant_type == "client_credentials"


CLIENTS = {
    "herald-basic": Client("herald-basic", "basic-client-secret", "client_secret_basic", {"webhook.send"}),
    "herald-post": Client("herald-post", "post-client-secret", "client_secret_post", {"webhook.send"}),
}


class Token:
    def __init__(self, data, client_id):
        self.access_token = data["access_token"]
        self.scope = data.get("scope", "")
        self.expires_in = data.get("expires_in", EXPIRES_IN)
        self.issued_at = time.time()
        self.client_id = client_id
        self.revoked = False

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_in

    def is_expired(self):
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self):
        return self.revoked


TOKENS = {}


def query_client(client_id):
    return CLIENTS.get(client_id)


def save_token(token, request):
    with lock:
        TOKENS[token["access_token"]] = Token(token, request.client.get_client_id())


server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
server.scopes_supported = ["webhook.send"]
class ClientCredentials(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


server.register_grant(ClientCredentials)


class Validator(BearerTokenValidator):
    def authenticate_token(self, token_string):
        with lock:
            return TOKENS.get(token_string)


require_oauth = ResourceProtector()
require_oauth.register_token_validator(Validator())


@app.route("/token", methods=["POST"])
def issue_token():
    with lock:
        stats["token_requests"] += 1
    return server.create_token_response()


@app.route("/token-503", methods=["POST"])
def token_unavailable():
    return jsonify(error="temporarily_unavailable", error_description="down for maintenance"), 503


@app.route("/hook", methods=["POST"])
def hook():
    try:
        require_oauth.acquire_token(["webhook.send"])
    except Exception as e:  # authlib raises OAuth2Error subclasses
        with lock:
            stats["hook_refused"] += 1
        return jsonify(error=getattr(e, "error", "invalid_token")), 401
    with lock:
        stats["hook_ok"] += 1
    return "ok"


@app.route("/revoke-all", methods=["POST"])
def revoke_all():
    with lock:
        for t in TOKENS.values():
            t.revoked = True
    return "ok"


@app.route("/stats")
def get_stats():
    with lock:
        return jsonify(stats)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=PORT, threaded=True)
