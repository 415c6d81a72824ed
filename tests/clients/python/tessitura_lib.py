"""Drives session-sidecar through the `tessitura` Python library (PyPI), unmodified.

The library sends Tessitura's Basic credentials (`user:usergroup:location:password`), puts
session keys into paths without percent-encoding them, and sends bodies as `str(dict)`, i.e.
Python's single-quoted notation. Run by tests/it/real_clients.rs with SIDECAR_URL,
TESSITURA_CREDENTIALS and CONSTITUENT (the customer the fake app's login asserts). Prints one
JSON line of facts; any failed check exits non-zero.
"""

import json
import os
import sys
from urllib.parse import quote

import tessitura

ENDPOINT = os.environ["SIDECAR_URL"] + "/"
CREDENTIALS = os.environ["TESSITURA_CREDENTIALS"]
CONSTITUENT = os.environ["CONSTITUENT"]
facts = {}


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def call(method, path, data=None, credentials=CREDENTIALS):
    kwargs = {} if data is None else {"data": data}
    return tessitura.rest_call(ENDPOINT, credentials, method, path, **kwargs)


def create():
    rsp = call("POST", "Web/Session", data={"Organization": "IMPRESARIO"})
    check(isinstance(rsp.get("SessionKey"), str) and len(rsp["SessionKey"]) == 108, "POST Web/Session")
    return rsp["SessionKey"]


# Wrong password: 401 with ErrorMessages.
rsp = call("POST", "Web/Session", data={}, credentials=CREDENTIALS + "x")
check(rsp.get("error") == 401 and rsp["info"]["ErrorMessages"][0]["Code"] == "Unauthorized", "wrong password is 401")

# A key with '/', so the library's unencoded path is the hard case.
key = create()
for _ in range(40):
    if "/" in key:
        break
    key = create()
check("/" in key, "a key with '/'")

rsp = call("GET", "Web/Session/" + key)
check(rsp.get("SessionKey") == key and rsp["IsLoggedIn"] is False, "GET Web/Session/{key}, key unencoded")
rsp = call("GET", "Web/Session/" + quote(key, safe=""))
check(rsp.get("SessionKey") == key, "GET Web/Session/{key}, key percent-encoded")

# Login stays in the app: the forwarded call binds the customer through the assertion header.
rsp = call("POST", "Web/Session/" + key + "/Login", data={"UserName": "jo", "Password": "pw", "LoginTypeId": 1})
check(rsp.get("IsLoggedIn") is True, "the app's login answer came back")
rsp = call("GET", "Web/Session/" + key)
check(rsp["IsLoggedIn"] is True and rsp["LoginInfo"]["ConstituentId"] == CONSTITUENT, "login bound the customer")
facts["logged_in_key"] = key

# Native transfer onto a new session, both keys as the library sends them.
target = create()
rsp = call("POST", "Web/Session/" + key + "/Transfer", data={"NewSessionKey": target})
check(rsp == {}, "native transfer answers 200 with an empty body")
rsp = call("GET", "Web/Session/" + key)
check(rsp.get("error") == 404, "the old key is gone")
rsp = call("GET", "Web/Session/" + target)
check(rsp["LoginInfo"]["ConstituentId"] == CONSTITUENT, "the identity moved to the new key")

# The wrapper's TransferSession: a dict (single quotes), and JSON text for booleans.
rsp = call("POST", "api/TransferSession", data={"SessionKey": target})
check(rsp.get("Success") is True and len(rsp["Data"]["SessionKey"]) == 108, "api/TransferSession")
moved = rsp["Data"]["SessionKey"]
rsp = call("POST", "api/TransferSession", data=json.dumps({"SessionKey": moved, "ResetSessionByLogin": True}))
check(rsp.get("Success") is True, "api/TransferSession with ResetSessionByLogin")
final = rsp["Data"]["SessionKey"]
rsp = call("GET", "Web/Session/" + final)
check(rsp["IsLoggedIn"] is True and rsp["LoginInfo"]["ConstituentId"] == CONSTITUENT, "the customer survives both transfers")
rsp = call("POST", "api/TransferSession", data={"SessionKey": moved})
check(rsp.get("error") == 404 and rsp["info"]["Success"] is False, "a transferred key is unknown")

print(json.dumps(facts))
