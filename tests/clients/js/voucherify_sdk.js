// Drives session-sidecar through Voucherify's official JS SDK (@voucherify/sdk 2.x), unmodified.
//
// Run by tests/it/real_clients.rs with SIDECAR_URL, APP_ID, APP_TOKEN and PREFIX (voucher codes
// PREFIX-ONE with quantity 1, PREFIX-FIVE with quantity 5, PREFIX-FREE without a limit). Every
// check reads what the SDK itself returns or throws. Prints one JSON line of facts for the Rust
// side (which checks what reached the app); any failed check exits non-zero.
'use strict'

const { VoucherifyServerSide, VoucherifyClientSide } = require('@voucherify/sdk')

const URL = process.env.SIDECAR_URL
const APP_ID = process.env.APP_ID
const APP_TOKEN = process.env.APP_TOKEN
const P = process.env.PREFIX
const [ONE, FIVE, FREE] = [`${P}-ONE`, `${P}-FIVE`, `${P}-FREE`]
const facts = {}

function check(cond, what) {
  if (!cond) {
    console.error(`FAILED: ${what}`)
    process.exit(1)
  }
  console.log(`ok: ${what}`)
}

const server = (token = APP_TOKEN) =>
  VoucherifyServerSide({ applicationId: APP_ID, secretKey: token, apiUrl: URL })
const clientSide = (token = APP_TOKEN) =>
  VoucherifyClientSide({
    clientApplicationId: APP_ID,
    clientSecretKey: token,
    apiUrl: URL,
    origin: 'https://shop.example',
  })
const vouchers = (...codes) => codes.map((id) => ({ object: 'voucher', id }))
const validate = (codes, session, extra = {}, client = server()) =>
  client.validations.validateStackable({ redeemables: vouchers(...codes), session, ...extra })
const soldOut = (r, code) =>
  r.valid === false &&
  r.stacking_rules !== undefined &&
  r.inapplicable_redeemables.some(
    (i) => i.id === code && i.status === 'INAPPLICABLE' && i.result.error.key === 'quantity_exceeded',
  )

async function rejects(promise) {
  try {
    await promise
  } catch (e) {
    return e
  }
  return null
}

async function main() {
  const vf = server()

  // Stacked validation with a LOCK of our own key.
  let r = await validate([ONE, FREE], { type: 'LOCK', key: `${P}-k1`, ttl: 2, ttl_unit: 'HOURS' })
  check(r.valid === true && r.session.key === `${P}-k1`, 'stacked validation locks with our key')
  check(r.session.ttl === 2 && r.session.ttl_unit === 'HOURS', 'ttl and unit echoed')

  // Sold out: valid false, as an answer, not an exception.
  r = await validate([ONE], { type: 'LOCK', key: `${P}-k2` })
  check(soldOut(r, ONE), 'sold-out stacked validation reads as valid=false')
  check(r.inapplicable_redeemables[0].result.error.request_id.startsWith('v-'), 'error carries request_id')

  // Without a key; fractional ttl; the JS SDK does not check units, the sidecar ignores case.
  r = await validate([FREE], { type: 'LOCK' })
  check(/^ssn_[A-Za-z0-9]{32}$/.test(r.session.key) && r.session.ttl === 7 && r.session.ttl_unit === 'DAYS',
    'generated key, default 7 DAYS')
  r = await validate([FREE], { type: 'LOCK', ttl: 0.5, ttl_unit: 'minutes' })
  check(r.session.ttl === 30000 && r.session.ttl_unit === 'MILLISECONDS', 'fractional ttl in ms, lower-case unit')

  // Single voucher validation (POST /v1/vouchers/{code}/validate): sold out in its own shape.
  r = await vf.validations.validateVoucher(ONE, { session: { type: 'LOCK', key: `${P}-single` } })
  check(r.valid === false && r.code === ONE && r.reason === 'quantity exceeded' && r.error.key === 'quantity_exceeded',
    'single-voucher sold-out answer')
  r = await vf.validations.validateVoucher(FREE, { session: { type: 'LOCK', key: `${P}-single` } })
  check(r.valid === true && r.code === FREE && r.session.key === `${P}-single`, 'single-voucher validation locks')

  // Release through the SDK (key with + / =); a second release is the SDK's 404 error.
  await vf.vouchers.releaseValidationSession(ONE, `${P}-k1`)
  const key = `${P}+rel/ease=`
  r = await validate([ONE], { type: 'LOCK', key })
  check(r.valid === true && r.session.key === key, 'lock after release, key with + / =')
  await vf.vouchers.releaseValidationSession(ONE, key)
  let e = await rejects(vf.vouchers.releaseValidationSession(ONE, key))
  check(e && e.code === 404 && e.key === 'not_found', 'second release: VoucherifyError 404')

  // Redemption releases the lock.
  await validate([ONE], { type: 'LOCK', key: `${P}-redeem` })
  await vf.redemptions.redeemStackable({ redeemables: vouchers(ONE), session: { type: 'LOCK', key: `${P}-redeem` } })
  r = await validate([ONE], { type: 'LOCK', key: `${P}-after-redeem` })
  check(r.valid === true, 'redeemStackable released the lock')
  await vf.vouchers.releaseValidationSession(ONE, `${P}-after-redeem`)

  // App failure: the SDK throws the app's error and the lock is rolled back.
  e = await rejects(validate([ONE], { type: 'LOCK', key: `${P}-failing` }, { metadata: { scenario: 'APP_FAILS' } }))
  check(e && e.code === 400 && e.key === 'voucher_expired', "the app's failure surfaces as VoucherifyError")
  r = await validate([ONE], { type: 'LOCK', key: `${P}-after-failure` })
  check(r.valid === true, "a failed validation's lock was rolled back")
  await vf.vouchers.releaseValidationSession(ONE, `${P}-after-failure`)

  // Client side: stacked calls.
  const cs = clientSide()
  r = await cs.validateStackable({ redeemables: vouchers(ONE), session: { type: 'LOCK', key: `${P}-client` } })
  check(r.valid === true && r.session.key === `${P}-client`, 'client-side validateStackable locks')
  r = await cs.validateStackable({ redeemables: vouchers(ONE), session: { type: 'LOCK' } })
  check(soldOut(r, ONE), 'client-side sold-out is valid=false')
  await cs.redeemStackable({ redeemables: vouchers(ONE), session: { type: 'LOCK', key: `${P}-client` } })
  r = await validate([ONE], { type: 'LOCK', key: `${P}-after-client` })
  check(r.valid === true, 'client-side redeemStackable released the lock')
  await vf.vouchers.releaseValidationSession(ONE, `${P}-after-client`)

  // Client side: the legacy validate() (GET /client/v1/validate) and redeem(). First an app
  // failure, whose lock must be rolled back for the next one to succeed.
  e = await rejects(cs.validate({ code: ONE, session_type: 'LOCK', session_key: `${P}-legacy-0`, metadata: { scenario: 'APP_FAILS' } }))
  check(e && e.code === 400 && e.key === 'voucher_expired', 'legacy validate(): app failure surfaces')
  r = await cs.validate({ code: ONE, session_type: 'LOCK', session_key: `${P}-legacy`, session_ttl: 1.5, session_ttl_unit: 'HOURS' })
  check(r.valid === true && r.session.key === `${P}-legacy`, 'legacy validate() locks')
  check(r.session.ttl === 5400000 && r.session.ttl_unit === 'MILLISECONDS', 'legacy fractional ttl')
  r = await cs.validate({ code: ONE, session_type: 'LOCK', session_key: `${P}-legacy-2` })
  check(r.valid === false && r.code === ONE && r.error.key === 'quantity_exceeded', 'legacy validate() sold out')
  await cs.redeem(ONE, { session: { key: `${P}-legacy` } })
  r = await validate([ONE], { type: 'LOCK', key: `${P}-after-legacy` })
  check(r.valid === true, 'legacy redeem() released the lock')
  await vf.vouchers.releaseValidationSession(ONE, `${P}-after-legacy`)

  // Wrong credentials: the SDK's own error, 401, with a request id.
  for (const [label, call] of [
    ['server', () => validate([FREE], { type: 'LOCK' }, {}, server('wrong-token'))],
    ['client', () => clientSide('wrong-token').validate({ code: FREE, session_type: 'LOCK', session_key: `${P}-hole` })],
    ['client redeem', () => clientSide('wrong-token').redeem(FREE, {})],
  ]) {
    e = await rejects(call())
    check(e && e.code === 401 && e.key === 'unauthorized' && /^v-/.test(e.request_id), `${label}: wrong token -> VoucherifyError 401`)
  }

  // Concurrent sessions on the quantity-5 code: exactly 5 win.
  const results = await Promise.all(
    Array.from({ length: 12 }, (_, i) => validate([FIVE], { type: 'LOCK', key: `${P}-crowd-${i}` })),
  )
  const won = results.filter((x) => x.valid === true).length
  check(won === 5 && results.length - won === 7, `exactly 5 of 12 concurrent sessions (${won})`)
  facts.crowd_won = won
  console.log(JSON.stringify(facts))
}

main().catch((err) => {
  console.error('FAILED with an exception:', err && (err.stack || err), err && err.response && err.response.data)
  process.exit(1)
})
