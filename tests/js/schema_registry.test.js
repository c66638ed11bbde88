'use strict'

// @kafkajs/confluent-schema-registry against the schema registry a vltava broker serves
// (schema.registry.listeners): Avro records encoded with a registered schema go through
// KafkaJS and decode again; an incompatible change is refused with Confluent's 409.

const { describe, test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')

const { SchemaRegistry, SchemaType } = require('@kafkajs/confluent-schema-registry')
const { startBroker, kafkaFor, stopAndCheck } = require('./broker')

const USER_V1 = {
  type: 'record',
  name: 'User',
  namespace: 'shop',
  fields: [
    { name: 'name', type: 'string' },
    { name: 'visits', type: 'int' },
  ],
}
const USER_V2 = { ...USER_V1, fields: [...USER_V1.fields, { name: 'email', type: ['null', 'string'], default: null }] }
const USER_BREAKING = { ...USER_V1, fields: [...USER_V1.fields, { name: 'country', type: 'string' }] }

describe('@kafkajs/confluent-schema-registry against vltava', { timeout: 120000 }, () => {
  let broker
  let registry

  before(async () => {
    broker = await startBroker({ overrides: { 'schema.registry.listeners': 'http://127.0.0.1:0' } })
    registry = new SchemaRegistry({ host: await broker.registryUrl() })
  })

  after(async () => {
    if (broker) await stopAndCheck(broker)
  })

  test('Avro round trip through the registry and the broker', async () => {
    const topic = `sr-js-${crypto.randomUUID()}`
    const subject = `${topic}-value`
    const { id: v1 } = await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(USER_V1) }, { subject })
    // Registering again gives the same id.
    const again = await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(USER_V1) }, { subject })
    assert.equal(again.id, v1)
    const { id: v2 } = await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(USER_V2) }, { subject })
    assert.notEqual(v2, v1)
    assert.equal(await registry.getLatestSchemaId(subject), v2)
    await assert.rejects(
      registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(USER_BREAKING) }, { subject }),
      err => err.status === 409
    )

    const values = [
      [v1, { name: 'ann', visits: 1 }],
      [v2, { name: 'bo', visits: 2, email: 'bo@example.com' }],
    ]
    const kafka = kafkaFor(broker, 'sr-js')
    const producer = kafka.producer()
    await producer.connect()
    const messages = []
    for (const [id, value] of values) messages.push({ value: await registry.encode(id, value) })
    await producer.send({ topic, messages })
    await producer.disconnect()

    const consumer = kafka.consumer({ groupId: `sr-js-${crypto.randomUUID()}` })
    await consumer.connect()
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    const got = []
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${got.length} records arrived`)), 60000)
      consumer.run({
        eachMessage: async ({ message }) => {
          assert.equal(message.value[0], 0, 'magic byte')
          got.push({ id: message.value.readInt32BE(1), value: await registry.decode(message.value) })
          if (got.length === values.length) {
            clearTimeout(timer)
            resolve()
          }
        },
      }).catch(reject)
    })
    await consumer.disconnect()
    assert.deepEqual(
      got.map(g => g.id),
      values.map(([id]) => id)
    )
    // avsc decodes records into instances of a generated class: compare their fields.
    assert.deepEqual({ ...got[0].value }, { name: 'ann', visits: 1 })
    assert.deepEqual({ ...got[1].value }, { name: 'bo', visits: 2, email: 'bo@example.com' })
  })
})
