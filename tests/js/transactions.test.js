'use strict'

// KafkaJS 2.2.x transactions against a real vltava broker: commit and abort seen through a
// read_committed consumer (KafkaJS's default isolation), sendOffsets, and fencing of a
// producer by a second instance with the same transactional id.

const { describe, test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')

const { startBroker, kafkaFor, stopAndCheck } = require('./broker')

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'

const TEST_TIMEOUT = 120000
const uniqueTopic = prefix => `${prefix}-${crypto.randomBytes(6).toString('hex')}`

// A transactional producer as KafkaJS's documentation writes one.
const txnProducer = (kafka, transactionalId) =>
  kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 })

// Every value a fresh group consumer reads from the start, once nothing new arrives for `idleMs`.
async function readAll(kafka, topic, { readUncommitted = false, idleMs = 3000 } = {}) {
  const consumer = kafka.consumer({ groupId: uniqueTopic('read'), readUncommitted })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  const values = []
  let last = Date.now()
  await consumer.run({
    eachMessage: async ({ message }) => {
      values.push(message.value.toString())
      last = Date.now()
    },
  })
  const started = Date.now()
  // Wait for the first assignment and fetch, then for quiet.
  while (Date.now() - last < idleMs || (values.length === 0 && Date.now() - started < 2 * idleMs)) {
    await new Promise(r => setTimeout(r, 200))
  }
  await consumer.disconnect()
  return values
}

describe('KafkaJS transactions', () => {
  let broker
  let kafka

  before(async () => {
    broker = await startBroker()
    kafka = kafkaFor(broker, 'vltava-e2e-js-txn')
  })

  after(async () => {
    if (broker) await stopAndCheck(broker)
  })

  test('commit is visible, abort is not', { timeout: TEST_TIMEOUT }, async () => {
    const topic = uniqueTopic('js-txn')
    const admin = kafka.admin()
    await admin.connect()
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] })
    await admin.disconnect()

    const producer = txnProducer(kafka, `js-${topic}`)
    await producer.connect()
    let txn = await producer.transaction()
    await txn.send({ topic, messages: [{ value: 'c0' }, { value: 'c1' }] })
    await txn.commit()
    txn = await producer.transaction()
    await txn.send({ topic, messages: [{ value: 'a0' }, { value: 'a1' }] })
    await txn.abort()
    txn = await producer.transaction()
    await txn.send({ topic, messages: [{ value: 'c2' }] })
    await txn.commit()
    await producer.disconnect()

    assert.deepEqual(await readAll(kafka, topic), ['c0', 'c1', 'c2'])
    assert.deepEqual(await readAll(kafka, topic, { readUncommitted: true }), ['c0', 'c1', 'a0', 'a1', 'c2'])
  })

  test('sendOffsets commits group offsets with the transaction', { timeout: TEST_TIMEOUT }, async () => {
    const topic = uniqueTopic('js-txn-offsets')
    const groupId = uniqueTopic('js-txn-group')
    const admin = kafka.admin()
    await admin.connect()
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] })

    const producer = txnProducer(kafka, `js-${topic}`)
    await producer.connect()
    let txn = await producer.transaction()
    await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic, partitions: [{ partition: 0, offset: '7' }] }] })
    await txn.abort()
    let offsets = await admin.fetchOffsets({ groupId, topics: [topic] })
    assert.equal(offsets[0].partitions[0].offset, '-1', 'an aborted transaction commits no offset')

    txn = await producer.transaction()
    await txn.send({ topic, messages: [{ value: 'x' }] })
    await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic, partitions: [{ partition: 0, offset: '5' }] }] })
    await txn.commit()
    offsets = await admin.fetchOffsets({ groupId, topics: [topic] })
    assert.equal(offsets[0].partitions[0].offset, '5')
    await producer.disconnect()
    await admin.disconnect()
  })

  test('a second instance fences the first', { timeout: TEST_TIMEOUT }, async () => {
    const topic = uniqueTopic('js-fence')
    const admin = kafka.admin()
    await admin.connect()
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] })
    await admin.disconnect()

    const transactionalId = `js-${topic}`
    const first = txnProducer(kafka, transactionalId)
    await first.connect()
    const firstTxn = await first.transaction()
    await firstTxn.send({ topic, messages: [{ value: 'from the first' }] })

    const second = txnProducer(kafka, transactionalId)
    await second.connect() // InitProducerId: bumps the epoch, aborts the first one's transaction
    const secondTxn = await second.transaction()
    await secondTxn.send({ topic, messages: [{ value: 'from the second' }] })
    await secondTxn.commit()

    await assert.rejects(
      (async () => {
        await firstTxn.send({ topic, messages: [{ value: 'late' }] })
        await firstTxn.commit()
      })(),
      err => {
        const type = err.type || (err.originalError && err.originalError.type)
        assert.ok(
          ['PRODUCER_FENCED', 'INVALID_PRODUCER_EPOCH'].includes(type),
          `fenced producer error: ${err.name} ${type} ${err.message}`
        )
        return true
      }
    )
    await first.disconnect().catch(() => {})
    await second.disconnect()
    assert.deepEqual(await readAll(kafka, topic), ['from the second'])
  })
})
