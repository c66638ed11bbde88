'use strict'

// KafkaJS over TLS against a vltava broker: SASL_SSL with SCRAM-SHA-512 and with PLAIN, and
// SSL with a client certificate on a listener with ssl.client.auth=required. Clients keep
// KafkaJS's defaults apart from the security settings; in particular they verify the broker's
// certificate and host name against the test CA. Refused clients (wrong password, unknown
// user, a client that does not trust the broker's CA, a client without a certificate on the
// mutual-TLS listener, a plaintext client on a TLS port) get KafkaJS's proper errors, and the
// broker goes on serving good clients.
//
// The certificates (a CA, a broker certificate for localhost and 127.0.0.1, a client
// certificate) are made once for the file with the `openssl` command line, as operators do.

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { execFileSync } = require('node:child_process')

const { Kafka, logLevel } = require('kafkajs')
const { startBroker, stopAndCheck, vltavaBin } = require('./broker')

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'

const PLAIN_JAAS = 'org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";'
const SCRAM_USER = 'scrammy'
const SCRAM_PASSWORD = 'scrammy-secret'

let pki // { dir, caPem, clientCertPem, clientKeyPem }
let broker
let ports // { sasl, ssl }

function openssl(dir, args) {
  try {
    execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (e) {
    throw new Error(`openssl ${args.join(' ')} failed: ${e.stderr}`)
  }
}

// A CA, a broker certificate (subjectAltName DNS:localhost, IP:127.0.0.1) and a client
// certificate (CN=alice), all RSA with unencrypted keys.
function makePki() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vltava-js-tls-'))
  openssl(dir, [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem',
    '-days', '2', '-subj', '/CN=vltava js test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ])
  const leaf = (name, subject, extensions) => {
    fs.writeFileSync(path.join(dir, `${name}.ext`), extensions.join('\n') + '\n')
    openssl(dir, ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject])
    openssl(dir, [
      'x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key',
      '-set_serial', `0x${crypto.randomBytes(8).toString('hex')}`,
      '-days', '2', '-sha256', '-extfile', `${name}.ext`, '-out', `${name}.pem`,
    ])
  }
  leaf('server', '/CN=localhost', [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth',
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ])
  leaf('client', '/O=Vltava/CN=alice', [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=clientAuth',
  ])
  const read = (f) => fs.readFileSync(path.join(dir, f), 'utf8')
  // The broker's key store: its certificate followed by its (unencrypted) private key.
  fs.writeFileSync(path.join(dir, 'broker-keystore.pem'), read('server.pem') + read('server.key'))
  return {
    dir,
    keystore: path.join(dir, 'broker-keystore.pem'),
    truststore: path.join(dir, 'ca.pem'),
    caPem: read('ca.pem'),
    clientCertPem: read('client.pem'),
    clientKeyPem: read('client.key'),
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

// A KafkaJS client at its defaults, apart from the security settings (and quiet logs).
function kafkaAt(port, { ssl, sasl, clientId = 'vltava-e2e-js-tls', ...rest } = {}) {
  return new Kafka({
    clientId,
    brokers: [`127.0.0.1:${port}`],
    logLevel: logLevel[String(process.env.KAFKAJS_LOG_LEVEL || 'nothing').toUpperCase()] ?? logLevel.NOTHING,
    ...(ssl === undefined ? {} : { ssl }),
    ...(sasl === undefined ? {} : { sasl }),
    ...rest,
  })
}

const scram = (username = SCRAM_USER, password = SCRAM_PASSWORD) => ({ mechanism: 'scram-sha-512', username, password })
const plain = (username = 'alice', password = 'alice-secret') => ({ mechanism: 'plain', username, password })
const trusting = () => ({ ca: [pki.caPem] })

// The error and its causes, outermost first.
function causes(e) {
  const chain = []
  for (let c = e; c && chain.length < 10; c = c.cause || c.originalError) chain.push(c)
  return chain
}
const describeError = (e) => causes(e).map((c) => `${c.name}${c.code ? ` [${c.code}]` : ''}: ${c.message}`).join(' <- ')

// Creates a topic, produces `n` records and reads them back with a consumer group.
async function roundTrip(kafka, label, n = 5) {
  const topic = `tls-${label}-${crypto.randomBytes(4).toString('hex')}`
  const admin = kafka.admin()
  await admin.connect()
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true })
  } finally {
    await admin.disconnect()
  }

  const values = Array.from({ length: n }, (_, i) => `${label}-secret-${i}`)
  const producer = kafka.producer()
  await producer.connect()
  try {
    await producer.send({ topic, messages: values.map((value, i) => ({ key: `k${i}`, value })) })
  } finally {
    await producer.disconnect()
  }

  const consumer = kafka.consumer({ groupId: `${topic}-readers` })
  const seen = []
  await consumer.connect()
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    let crashed = null
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      crashed = payload.error
    })
    let done
    const allRead = new Promise((resolve) => {
      done = resolve
    })
    await consumer.run({
      eachMessage: async ({ message }) => {
        seen.push(message.value.toString())
        if (seen.length >= n) done()
      },
    })
    let timer
    await Promise.race([
      allRead,
      new Promise((resolve) => {
        timer = setTimeout(resolve, 30000)
      }),
    ])
    clearTimeout(timer)
    assert.equal(crashed, null, `consumer crashed: ${crashed && describeError(crashed)}`)
  } finally {
    await consumer.disconnect()
  }
  assert.deepEqual(seen, values)
}

// Runs `fn` and returns the error it rejects with (failing if it resolves).
async function refusal(fn) {
  try {
    await fn()
  } catch (e) {
    return e
  }
  assert.fail('expected the connection to be refused, but it succeeded')
}

before(async () => {
  pki = makePki()
  ports = { sasl: await freePort(), ssl: await freePort() }
  // The PLAINTEXT listener comes first: it is the one the broker announces, and the CLI uses
  // it to create the SCRAM user.
  broker = await startBroker({
    listeners: `PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:${ports.sasl},SSL://127.0.0.1:${ports.ssl}`,
    overrides: {
      'ssl.keystore.type': 'PEM',
      'ssl.keystore.location': pki.keystore,
      'ssl.truststore.type': 'PEM',
      'ssl.truststore.location': pki.truststore,
      'listener.name.ssl.ssl.client.auth': 'required',
      'sasl.enabled.mechanisms': 'PLAIN,SCRAM-SHA-512',
      'listener.name.sasl_ssl.plain.sasl.jaas.config': PLAIN_JAAS,
    },
  })
  // vltava reads VLTAVA_<KEY> variables (e.g. VLTAVA_BOOTSTRAP): keep them from the CLI.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VLTAVA_')))
  execFileSync(
    vltavaBin(),
    ['user', 'scram', 'set', SCRAM_USER, '--mechanism', 'SCRAM-SHA-512', '--password-stdin', '-b', broker.bootstrap],
    { input: `${SCRAM_PASSWORD}\n`, env, stdio: ['pipe', 'pipe', 'pipe'] }
  )
})

after(async () => {
  if (broker) await stopAndCheck(broker)
  if (pki) fs.rmSync(pki.dir, { recursive: true, force: true })
})

test('SASL_SSL with SCRAM-SHA-512: KafkaJS produces and consumes', { timeout: 45000 }, async () => {
  await roundTrip(kafkaAt(ports.sasl, { ssl: trusting(), sasl: scram() }), 'scram')
})

test('SASL_SSL with PLAIN: KafkaJS produces and consumes', { timeout: 45000 }, async () => {
  await roundTrip(kafkaAt(ports.sasl, { ssl: trusting(), sasl: plain() }), 'plain')
})

test('SSL with a client certificate (ssl.client.auth=required): KafkaJS produces and consumes', { timeout: 45000 }, async () => {
  const ssl = { ca: [pki.caPem], cert: pki.clientCertPem, key: pki.clientKeyPem }
  await roundTrip(kafkaAt(ports.ssl, { ssl }), 'mtls')
})

test('wrong passwords and unknown users get KafkaJSSASLAuthenticationError', { timeout: 45000 }, async () => {
  const cases = [
    ['SCRAM-SHA-512, wrong password', scram(SCRAM_USER, 'not-the-password')],
    ['SCRAM-SHA-512, unknown user', scram('mallory', 'mallory-secret')],
    ['PLAIN, wrong password', plain('alice', 'not-the-password')],
    ['PLAIN, unknown user', plain('mallory', 'mallory-secret')],
  ]
  for (const [what, sasl] of cases) {
    const admin = kafkaAt(ports.sasl, { ssl: trusting(), sasl }).admin()
    const e = await refusal(() => admin.connect())
    await admin.disconnect()
    // Not retried, not wrapped: KafkaJS rejects with the authentication error itself.
    assert.equal(e.name, 'KafkaJSSASLAuthenticationError', `${what}: got ${describeError(e)}`)
    assert.ok(broker.alive(), `broker died:\n${broker.stderrTail()}`)
  }
})

test('a client that does not trust the broker CA fails certificate verification', { timeout: 45000 }, async () => {
  // ssl: true is KafkaJS's TLS with Node's default trust store, which lacks the test CA.
  // KafkaJS retries connection errors (at its default pace): both listeners at once.
  const attempts = [
    ['SASL_SSL', ports.sasl, scram()],
    ['SSL', ports.ssl, undefined],
  ].map(async ([what, port, sasl]) => {
    const admin = kafkaAt(port, { ssl: true, sasl }).admin()
    const e = await refusal(() => admin.connect())
    await admin.disconnect()
    return [what, e]
  })
  for (const [what, e] of await Promise.all(attempts)) {
    const codes = causes(e).map((c) => c.code).filter(Boolean)
    assert.ok(
      codes.some((c) =>
        ['SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY'].includes(c)
      ),
      `${what}: want a certificate verification error, got ${describeError(e)}`
    )
    assert.ok(!causes(e).some((c) => c.name === 'KafkaJSSASLAuthenticationError'), describeError(e))
  }
  assert.ok(broker.alive(), `broker died:\n${broker.stderrTail()}`)
})

test('the ssl.client.auth=required listener refuses a client without a certificate', { timeout: 45000 }, async () => {
  const admin = kafkaAt(ports.ssl, { ssl: trusting() }).admin()
  const e = await refusal(() => admin.connect())
  await admin.disconnect()
  // The broker's TLS alert (TLS 1.3's certificate_required, or a handshake failure).
  assert.ok(
    causes(e).some((c) => /^ERR_SSL_(TLSV13_ALERT_CERTIFICATE_REQUIRED|SSLV3_ALERT_HANDSHAKE_FAILURE)$/.test(c.code || '')),
    `want the broker's TLS alert for a missing certificate, got ${describeError(e)}`
  )
  assert.ok(broker.alive(), `broker died:\n${broker.stderrTail()}`)
})

test('a plaintext client on a TLS port fails', { timeout: 45000 }, async () => {
  for (const [what, port] of [
    ['SASL_SSL', ports.sasl],
    ['SSL', ports.ssl],
  ]) {
    // Only here are KafkaJS's timeouts and retries lowered: a refusal may be a silent
    // connection, and this bounds how long the test waits for it.
    const admin = kafkaAt(port, {
      connectionTimeout: 2000,
      requestTimeout: 3000,
      authenticationTimeout: 3000,
      retry: { retries: 0 },
    }).admin()
    const started = Date.now()
    const e = await refusal(() => admin.connect())
    await admin.disconnect()
    const took = Date.now() - started
    assert.ok(took < 15000, `${what}: refusal took ${took} ms: ${describeError(e)}`)
    assert.ok(
      causes(e).some((c) => /^KafkaJS(Connection|ConnectionClosed|RequestTimeout)Error$/.test(c.name)),
      `${what}: want a connection error, got ${describeError(e)}`
    )
  }
  assert.ok(broker.alive(), `broker died:\n${broker.stderrTail()}`)
})

test('after the refusals the broker still serves good clients on every listener', { timeout: 45000 }, async () => {
  const clients = [
    ['scram', kafkaAt(ports.sasl, { ssl: trusting(), sasl: scram() })],
    ['plain', kafkaAt(ports.sasl, { ssl: trusting(), sasl: plain() })],
    ['mtls', kafkaAt(ports.ssl, { ssl: { ca: [pki.caPem], cert: pki.clientCertPem, key: pki.clientKeyPem } })],
  ]
  const topic = `tls-after-${crypto.randomBytes(4).toString('hex')}`
  const admin = clients[0][1].admin()
  await admin.connect()
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true })
    for (const [label, kafka] of clients) {
      const producer = kafka.producer()
      await producer.connect()
      try {
        await producer.send({ topic, messages: [{ value: `after-${label}` }] })
      } finally {
        await producer.disconnect()
      }
    }
    const [offsets] = await admin.fetchTopicOffsets(topic)
    assert.equal(offsets.high, String(clients.length), JSON.stringify(offsets))
  } finally {
    await admin.disconnect()
  }
})
