'use strict'

// @kafkajs/confluent-schema-registry against the schema registry a vltava broker serves
// (schema.registry.listeners): Avro, Protobuf and JSON Schema records encoded with a
// registered schema go through KafkaJS and decode again; an incompatible change is refused
// with Confluent's 409.

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

const ORDER_V1 = `syntax = "proto3";
package shop;

message Order {
  string id = 1;
  int32 qty = 2;
  repeated string tags = 3;
}
`
const ORDER_V2 = ORDER_V1.replace('repeated string tags = 3;', 'repeated string tags = 3;\n  string note = 4;')
// Field 2's bytes are a varint; a string reader would take them for a length.
const ORDER_BREAKING = ORDER_V1.replace('int32 qty = 2;', 'string qty = 2;')

const POINT_V1 = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  type: 'object',
  properties: { x: { type: 'number' }, y: { type: 'number' } },
  required: ['x', 'y'],
  additionalProperties: false,
}
// Closed content model: old points never carry `label`, so making room for it is safe.
const POINT_V2 = { ...POINT_V1, properties: { ...POINT_V1.properties, label: { type: 'string' } } }
const POINT_BREAKING = { ...POINT_V1, properties: { ...POINT_V1.properties, x: { type: 'string' } } }

/** Produces `values` (already encoded) to `topic` with KafkaJS and consumes them back. */
async function throughBroker(broker, topic, values) {
  const kafka = kafkaFor(broker, 'sr-js')
  const producer = kafka.producer()
  await producer.connect()
  await producer.send({ topic, messages: values.map(value => ({ value })) })
  await producer.disconnect()

  const consumer = kafka.consumer({ groupId: `sr-js-${crypto.randomUUID()}` })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  const got = []
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${got.length} records arrived`)), 60000)
    consumer
      .run({
        eachMessage: async ({ message }) => {
          got.push(message.value)
          if (got.length === values.length) {
            clearTimeout(timer)
            resolve()
          }
        },
      })
      .catch(reject)
  })
  await consumer.disconnect()
  return got
}

/** The schema id in a record's Confluent framing: magic byte 0, then 4 bytes big-endian. */
function framedId(value) {
  assert.equal(value[0], 0, 'magic byte')
  return value.readInt32BE(1)
}

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
    const encoded = []
    for (const [id, value] of values) encoded.push(await registry.encode(id, value))
    const got = []
    for (const value of await throughBroker(broker, topic, encoded)) {
      got.push({ id: framedId(value), value: await registry.decode(value) })
    }
    assert.deepEqual(
      got.map(g => g.id),
      values.map(([id]) => id)
    )
    // avsc decodes records into instances of a generated class: compare their fields.
    assert.deepEqual({ ...got[0].value }, { name: 'ann', visits: 1 })
    assert.deepEqual({ ...got[1].value }, { name: 'bo', visits: 2, email: 'bo@example.com' })
  })

  test('Protobuf round trip through the registry and the broker', async () => {
    const topic = `sr-js-proto-${crypto.randomUUID()}`
    const subject = `${topic}-value`
    const { id: v1 } = await registry.register({ type: SchemaType.PROTOBUF, schema: ORDER_V1 }, { subject })
    const again = await registry.register({ type: SchemaType.PROTOBUF, schema: ORDER_V1 }, { subject })
    assert.equal(again.id, v1)
    const { id: v2 } = await registry.register({ type: SchemaType.PROTOBUF, schema: ORDER_V2 }, { subject })
    assert.notEqual(v2, v1)
    assert.equal(await registry.getLatestSchemaId(subject), v2)
    await assert.rejects(
      registry.register({ type: SchemaType.PROTOBUF, schema: ORDER_BREAKING }, { subject }),
      err => err.status === 409
    )

    // confluent-kafka's serializers register a base64 descriptor instead of .proto text; the
    // registry answers with text all the same, the only form protobufjs parses.
    const host = await broker.registryUrl()
    const serialized = await (await fetch(`${host}/schemas/ids/${v1}?format=serialized`)).json()
    const registered = await fetch(`${host}/subjects/${subject}-descriptor/versions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/vnd.schemaregistry.v1+json' },
      body: JSON.stringify({ schemaType: 'PROTOBUF', schema: serialized.schema }),
    })
    assert.equal(registered.status, 200)
    const { id: fromDescriptor } = await registered.json()

    const values = [
      [v1, { id: 'o-1', qty: 3, tags: ['red', 'big'] }],
      [v2, { id: 'o-2', qty: 1, tags: ['small'], note: 'gift' }],
      [fromDescriptor, { id: 'o-3', qty: 2, tags: ['boxed'] }],
    ]
    const encoded = []
    for (const [id, value] of values) encoded.push(await registry.encode(id, value))
    // A second client, with an empty cache, fetches each schema by id: the registry's answer
    // must be .proto text that protobufjs parses.
    const reader = new SchemaRegistry({ host: await broker.registryUrl() })
    const got = []
    for (const value of await throughBroker(broker, topic, encoded)) {
      got.push({ id: framedId(value), value: (await reader.decode(value)).toJSON() })
    }
    assert.deepEqual(
      got,
      values.map(([id, value]) => ({ id, value }))
    )
  })

  test('JSON Schema round trip through the registry and the broker', async () => {
    const topic = `sr-js-json-${crypto.randomUUID()}`
    const subject = `${topic}-value`
    const schema = s => ({ type: SchemaType.JSON, schema: JSON.stringify(s) })
    const { id: v1 } = await registry.register(schema(POINT_V1), { subject })
    const again = await registry.register(schema(POINT_V1), { subject })
    assert.equal(again.id, v1)
    const { id: v2 } = await registry.register(schema(POINT_V2), { subject })
    assert.notEqual(v2, v1)
    assert.equal(await registry.getLatestSchemaId(subject), v2)
    await assert.rejects(registry.register(schema(POINT_BREAKING), { subject }), err => err.status === 409)

    const values = [
      [v1, { x: 1.5, y: -2 }],
      [v2, { x: 0, y: 7, label: 'origin-ish' }],
    ]
    const encoded = []
    for (const [id, value] of values) encoded.push(await registry.encode(id, value))
    // Encoding validates against the schema: a point without `y` is refused by the client.
    await assert.rejects(registry.encode(v1, { x: 1 }), /invalid payload/)
    const reader = new SchemaRegistry({ host: await broker.registryUrl() })
    const got = []
    for (const value of await throughBroker(broker, topic, encoded)) {
      got.push({ id: framedId(value), value: await reader.decode(value) })
    }
    assert.deepEqual(
      got,
      values.map(([id, value]) => ({ id, value }))
    )
  })
})
