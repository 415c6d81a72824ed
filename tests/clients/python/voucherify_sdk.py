"""Drives session-sidecar through Voucherify's official Python SDK (`voucherify` 6.x), unmodified.

Run by tests/it/real_clients.rs with SIDECAR_URL, APP_ID, APP_TOKEN and PREFIX (voucher codes
PREFIX-ONE with quantity 1, PREFIX-FIVE with quantity 5, PREFIX-FREE without a limit). Every
check reads what the SDK itself returns or raises. Prints one JSON line of facts for the Rust
side (which checks what reached the app); any failed check exits non-zero.
"""

import json
import os
import sys
import threading

from voucherify import ApiClient, Configuration
from voucherify.api.client_side_api import ClientSideApi
from voucherify.api.redemptions_api import RedemptionsApi
from voucherify.api.validations_api import ValidationsApi
from voucherify.api.vouchers_api import VouchersApi
from voucherify.exceptions import ApiException, UnauthorizedException
from voucherify.models.client_redemptions_redeem_request_body import ClientRedemptionsRedeemRequestBody
from voucherify.models.client_validations_validate_request_body import ClientValidationsValidateRequestBody
from voucherify.models.redemptions_redeem_request_body import RedemptionsRedeemRequestBody
from voucherify.models.validations_validate_request_body import ValidationsValidateRequestBody

URL = os.environ["SIDECAR_URL"]
APP_ID = os.environ["APP_ID"]
APP_TOKEN = os.environ["APP_TOKEN"]
P = os.environ["PREFIX"]
ONE, FIVE, FREE = f"{P}-ONE", f"{P}-FIVE", f"{P}-FREE"
ORIGIN = "https://shop.example"
facts = {}


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def server(token=APP_TOKEN):
    return ApiClient(Configuration(host=URL, api_key={"X-App-Id": APP_ID, "X-App-Token": token}))


def client_side(token=APP_TOKEN):
    return ApiClient(
        Configuration(host=URL, api_key={"X-Client-Application-Id": APP_ID, "X-Client-Token": token})
    )


def vouchers(*codes):
    return [{"object": "voucher", "id": c} for c in codes]


def validate(codes, session, metadata=None, api=None):
    body = {"redeemables": vouchers(*codes), "session": session}
    if metadata:
        body["metadata"] = metadata
    api = api or ValidationsApi(server())
    return api.validate_stacked_discounts(ValidationsValidateRequestBody.from_dict(body))


def is_sold_out(result, code):
    """The SDK's own result object of a sold-out validation (SPEC §13.7)."""
    return (
        result.valid is False
        and result.stacking_rules is not None
        and any(
            i.id == code and i.status == "INAPPLICABLE" and i.result.error.key == "quantity_exceeded"
            for i in result.inapplicable_redeemables or []
        )
    )


# A LOCK with a key of our own, several codes (stacked).
r = validate([ONE, FREE], {"type": "LOCK", "key": f"{P}-k1", "ttl": 2, "ttl_unit": "HOURS"})
check(r.valid is True, "stacked validation with a LOCK is valid")
check(r.session.key == f"{P}-k1" and r.session.type == "LOCK", "session echoed with our key")
check((r.session.ttl, r.session.ttl_unit) == (2, "HOURS"), "ttl and unit echoed")

# Sold out: another session on the quantity-1 code gets valid: false, not an exception.
r = validate([ONE], {"type": "LOCK", "key": f"{P}-k2"})
check(is_sold_out(r, ONE), "sold-out validation reads as valid=False with quantity_exceeded")
check(r.inapplicable_redeemables[0].result.error.request_id.startswith("v-"), "error carries request_id")

# Without a key: one is generated; default ttl 7 DAYS.
r = validate([FREE], {"type": "LOCK"})
check(r.session.key.startswith("ssn_") and len(r.session.key) == 36, "generated ssn_ key")
check((r.session.ttl, r.session.ttl_unit) == (7, "DAYS"), "default ttl 7 DAYS")

# Fractional ttl (the SDK types it as a float): rounded to the millisecond.
r = validate([FREE], {"type": "LOCK", "ttl": 1.5, "ttl_unit": "SECONDS"})
check((r.session.ttl, r.session.ttl_unit) == (1500, "MILLISECONDS"), "fractional ttl in ms")

# Release through the SDK, with a key holding + / =; the unit is free again.
key = f"{P}+rel/ease="
r = validate([ONE], {"type": "LOCK", "key": key})
check(is_sold_out(r, ONE), "still held by k1")
VouchersApi(server()).release_validation_session(ONE, f"{P}-k1")
r = validate([ONE], {"type": "LOCK", "key": key})
check(r.valid is True and r.session.key == key, "lock after release, key with + / =")
VouchersApi(server()).release_validation_session(ONE, key)
try:
    VouchersApi(server()).release_validation_session(ONE, key)
    check(False, "second release must fail")
except ApiException as e:
    check(e.status == 404 and json.loads(e.body)["key"] == "not_found", "second release is 404 not_found")

# Redemption releases the lock.
r = validate([ONE], {"type": "LOCK", "key": f"{P}-redeem"})
check(r.valid, "lock for redemption")
RedemptionsApi(server()).redeem_stacked_discounts(
    RedemptionsRedeemRequestBody.from_dict(
        {"redeemables": vouchers(ONE), "session": {"type": "LOCK", "key": f"{P}-redeem"}}
    )
)
r = validate([ONE], {"type": "LOCK", "key": f"{P}-after-redeem"})
check(r.valid is True, "redemption released the lock")
VouchersApi(server()).release_validation_session(ONE, f"{P}-after-redeem")

# The app fails: the lock is rolled back, so another session gets the unit.
try:
    validate([ONE], {"type": "LOCK", "key": f"{P}-failing"}, metadata={"scenario": "APP_FAILS"})
    check(False, "the app's failure must surface")
except ApiException as e:
    check(e.status == 400, "app failure surfaces as ApiException 400")
r = validate([ONE], {"type": "LOCK", "key": f"{P}-after-failure"})
check(r.valid is True, "a failed validation's lock was rolled back")
VouchersApi(server()).release_validation_session(ONE, f"{P}-after-failure")

# Client side (X-Client-Application-Id / X-Client-Token, origin header).
cs = ClientSideApi(client_side())
r = cs.validate_stacked_discounts_client_side(
    ORIGIN,
    ClientValidationsValidateRequestBody.from_dict(
        {"redeemables": vouchers(ONE), "session": {"type": "LOCK", "key": f"{P}-client", "ttl_unit": "MINUTES", "ttl": 10}}
    ),
)
check(r.valid is True and r.session.key == f"{P}-client", "client-side stacked validation locks")
# (The Python SDK checks units itself: a lower-case one never leaves it.)
check((r.session.ttl, r.session.ttl_unit) == (10, "MINUTES"), "client-side ttl and unit echoed")
r = cs.validate_stacked_discounts_client_side(
    ORIGIN,
    ClientValidationsValidateRequestBody.from_dict({"redeemables": vouchers(ONE), "session": {"type": "LOCK"}}),
)
check(r.valid is False and r.inapplicable_redeemables[0].result.error.key == "quantity_exceeded",
      "client-side sold-out is valid=False")
cs.redeem_stacked_discounts_client_side(
    ORIGIN,
    ClientRedemptionsRedeemRequestBody.from_dict(
        {"redeemables": vouchers(ONE), "session": {"type": "LOCK", "key": f"{P}-client"}}
    ),
)
r = validate([ONE], {"type": "LOCK", "key": f"{P}-after-client"})
check(r.valid is True, "client-side redemption released the lock")
VouchersApi(server()).release_validation_session(ONE, f"{P}-after-client")

# Wrong credentials: the SDK's own unauthorized error, on the server and the client API.
for label, call in [
    ("server", lambda: validate([FREE], {"type": "LOCK"}, api=ValidationsApi(server("wrong-token")))),
    ("client", lambda: ClientSideApi(client_side("wrong-token")).validate_stacked_discounts_client_side(
        ORIGIN, ClientValidationsValidateRequestBody.from_dict({"redeemables": vouchers(FREE)}))),
]:
    try:
        call()
        check(False, f"{label}: wrong token must be refused")
    except UnauthorizedException as e:
        body = json.loads(e.body)
        check(e.status == 401 and body["key"] == "unauthorized", f"{label}: wrong token -> UnauthorizedException")
        check(body["request_id"] == e.headers.get("X-Request-Id"), f"{label}: request_id in body and header")

# Concurrent sessions on the quantity-5 code: exactly 5 win.
results = []
lock = threading.Lock()


def contend(i):
    r = validate([FIVE], {"type": "LOCK", "key": f"{P}-crowd-{i}"})
    with lock:
        results.append(r.valid)


threads = [threading.Thread(target=contend, args=(i,)) for i in range(12)]
for t in threads:
    t.start()
for t in threads:
    t.join()
check(results.count(True) == 5 and results.count(False) == 7, f"exactly 5 of 12 concurrent sessions: {results}")
facts["crowd_won"] = results.count(True)

print(json.dumps(facts))
