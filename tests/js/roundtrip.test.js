'use strict'

// KafkaJS 2.2.x end-to-end tests against a real vltava broker.
//
// Records are read back with KafkaJS's own protocol stack below the consumer (a Cluster
// object and Broker#fetch, which decodes and decompresses batches with exactly the code the
// consumer uses), so that a round trip checks every record without group bookkeeping. The
// group consumer itself is tested in groups.test.js.

const { describe, test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')

const {
  CompressionTypes,
  CompressionCodecs,
  ConfigResourceTypes,
  Partitioners,
  logLevel,
} = require('kafkajs')
// Internals (see the comment at the top): the cluster, its logger and socket
// factory, and the isolation level constants.
const Cluster = require('kafkajs/src/cluster')
const { createLogger } = require('kafkajs/src/loggers')
const LoggerConsole = require('kafkajs/src/loggers/console')
const defaultSocketFactory = require('kafkajs/src/network/socketFactory')
const ISOLATION_LEVEL = require('kafkajs/src/protocol/isolationLevel')

const { startBroker, kafkaFor, stopAndCheck } = require('./broker')

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'

const N_RECORDS = 5000
const CHUNK = 1000
const TEST_TIMEOUT = 300000
// KafkaJS logs expected broker errors (e.g. TOPIC_ALREADY_EXISTS) at ERROR
// level; failures surface as exceptions anyway. KAFKAJS_LOG_LEVEL=debug|info|warn|error to see them.
const LOG_LEVEL = logLevel[String(process.env.KAFKAJS_LOG_LEVEL || 'nothing').toUpperCase()] ?? logLevel.NOTHING

const uniqueTopic = prefix => `${prefix}-${crypto.randomBytes(6).toString('hex')}`

// KafkaJS ships only gzip; its users register the other codecs. These are pure JS or
// WebAssembly, so nothing is compiled at install time: kafkajs-snappy (xerial framing, as
// the Java client writes it), lz4js (the LZ4 frame format) and @bokuweb/zstd-wasm.
const SnappyCodec = require('kafkajs-snappy')
const lz4 = require('lz4js')
const zstd = require('@bokuweb/zstd-wasm')
const zstdReady = zstd.init()
CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
CompressionCodecs[CompressionTypes.LZ4] = () => ({
  async compress(encoder) {
    return Buffer.from(lz4.compress(encoder.buffer))
  },
  async decompress(buffer) {
    return Buffer.from(lz4.decompress(buffer))
  },
})
CompressionCodecs[CompressionTypes.ZSTD] = () => ({
  async compress(encoder) {
    await zstdReady
    return Buffer.from(zstd.compress(encoder.buffer, 3))
  },
  async decompress(buffer) {
    await zstdReady
    return Buffer.from(zstd.decompress(buffer))
  },
})

// Count decompressions per codec so the test can tell that the broker hands back the
// batches compressed exactly as produced ("stored as-is").
const CODECS = [CompressionTypes.GZIP, CompressionTypes.Snappy, CompressionTypes.LZ4, CompressionTypes.ZSTD]
const decompressions = Object.fromEntries(CODECS.map(t => [t, 0]))
for (const type of CODECS) {
  const original = CompressionCodecs[type]
  CompressionCodecs[type] = () => {
    const codec = original()
    return {
      compress: codec.compress,
      async decompress(buffer) {
        decompressions[type]++
        return codec.decompress(buffer)
      },
    }
  }
}

function makeRecords(n, tag) {
  const baseTs = Math.floor((Date.now() - 3600000) / 1000) * 1000
  const records = []
  for (let i = 0; i < n; i++) {
    let key
    if (i % 1000 === 999) key = null
    else if (i % 3 === 0) key = Buffer.from(`klíč-${i % 379}`, 'utf8')
    else key = Buffer.from(`key-${i % 379}`)
    let value
    if (i % 500 === 250) value = null
    else if (i % 997 === 13) value = Buffer.alloc(20480, i % 251)
    else value = Buffer.from(`value-${String(i).padStart(6, '0')}-${tag}-` + 'abcdefghij'.repeat(i % 37))
    // KafkaJS represents repeated header keys as arrays.
    const headers =
      i % 11 === 0
        ? {}
        : { idx: Buffer.from(String(i)), codec: Buffer.from(tag), dup: [Buffer.from('first'), Buffer.from('second')], empty: Buffer.alloc(0) }
    records.push({ index: i, key, value, headers, timestamp: String(baseTs + i), partition: -1, offset: -1 })
  }
  return records
}

function findErrorType(err, type) {
  const seen = new Set()
  const stack = [err]
  while (stack.length) {
    const e = stack.pop()
    if (!e || seen.has(e)) continue
    seen.add(e)
    if (e.type === type) return true
    if (Array.isArray(e.errors)) stack.push(...e.errors)
    stack.push(e.cause, e.originalError, e.retriableError)
  }
  return false
}

describe('KafkaJS against vltava', { timeout: 900000 }, () => {
  let broker
  let kafka
  let admin

  before(async () => {
    broker = await startBroker()
    kafka = kafkaFor(broker, 'vltava-e2e-js')
    admin = kafka.admin()
    await admin.connect()
  })

  after(async () => {
    if (admin) await admin.disconnect()
    if (broker) await stopAndCheck(broker)
  })

  async function createTopic(topic, numPartitions, configEntries = []) {
    const created = await admin.createTopics({
      topics: [{ topic, numPartitions, replicationFactor: 1, configEntries }],
      waitForLeaders: true,
      timeout: 30000,
    })
    assert.equal(created, true, `createTopics(${topic}) reported the topic as already existing`)
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
    assert.equal(topics[0].partitions.length, numPartitions)
    return topics[0].partitions
  }

  // Produces in chunks of CHUNK messages (one Produce request each, one batch
  // per partition). Returns the base offset per partition of every chunk.
  async function produce(topic, records, compression, partitionMetadata) {
    const producer = kafka.producer({
      createPartitioner: Partitioners.DefaultPartitioner,
      allowAutoTopicCreation: false,
    })
    await producer.connect()
    // Same partitioner as the producer's: tells where each keyed record must
    // land (null keys are round-robin and learnt from the fetch).
    const partitioner = Partitioners.DefaultPartitioner()
    const chunkBases = []
    try {
      for (let start = 0; start < records.length; start += CHUNK) {
        const chunk = records.slice(start, start + CHUNK)
        const result = await producer.send({
          topic,
          acks: -1,
          timeout: 30000,
          compression,
          messages: chunk.map(r => ({ key: r.key, value: r.value, headers: r.headers, timestamp: r.timestamp })),
        })
        const bases = {}
        for (const md of result) {
          assert.equal(md.errorCode, 0, `produce error ${JSON.stringify(md)}`)
          bases[md.partition] = BigInt(md.baseOffset)
        }
        for (const r of chunk) {
          r.chunk = chunkBases.length
          r.partition = r.key === null ? null : partitioner({ topic, partitionMetadata, message: { key: r.key } })
          if (r.partition !== null) assert.ok(r.partition in bases, `no produce response for partition ${r.partition}`)
        }
        chunkBases.push(bases)
      }
    } finally {
      await producer.disconnect()
    }
    return chunkBases
  }

  // Read every partition from offset 0 up to its high watermark with
  // Broker#fetch, decoding batches with KafkaJS's own decoders.
  async function fetchAll(topic, partitions) {
    const cluster = new Cluster({
      logger: createLogger({ level: LOG_LEVEL, logCreator: LoggerConsole }),
      socketFactory: defaultSocketFactory(),
      brokers: [broker.bootstrap],
      clientId: 'vltava-e2e-js-fetch',
      connectionTimeout: 10000,
      requestTimeout: 30000,
      enforceRequestTimeout: true,
      metadataMaxAge: 300000,
      allowAutoTopicCreation: false,
      retry: { retries: 5 },
    })
    await cluster.connect()
    const out = []
    try {
      await cluster.addTargetTopic(topic)
      const leaders = cluster.findLeaderForPartitions(topic, partitions)
      for (const [nodeId, leaderPartitions] of Object.entries(leaders)) {
        const b = await cluster.findBroker({ nodeId })
        const next = Object.fromEntries(leaderPartitions.map(p => [p, 0n]))
        const high = {}
        const done = () => leaderPartitions.every(p => high[p] !== undefined && next[p] >= high[p])
        const deadline = Date.now() + 120000
        while (!done()) {
          if (Date.now() >= deadline) {
            const show = o => JSON.stringify(Object.fromEntries(Object.entries(o).map(([k, v]) => [k, String(v)])))
            assert.fail(`fetch did not reach the high watermark within 120s: next=${show(next)} high=${show(high)}`)
          }
          const { responses } = await b.fetch({
            maxWaitTime: 100,
            minBytes: 1,
            maxBytes: 10485760,
            isolationLevel: ISOLATION_LEVEL.READ_COMMITTED,
            topics: [
              {
                topic,
                partitions: leaderPartitions
                  .filter(p => !(high[p] !== undefined && next[p] >= high[p]))
                  .map(p => ({ partition: p, fetchOffset: next[p].toString(), maxBytes: 1048576 })),
              },
            ],
          })
          for (const { topicName, partitions: parts } of responses) {
            assert.equal(topicName, topic)
            for (const part of parts) {
              assert.equal(part.errorCode, 0, `fetch error on partition ${part.partition}: ${part.errorCode}`)
              high[part.partition] = BigInt(part.highWatermark)
              for (const m of part.messages) {
                const offset = BigInt(m.offset)
                // A batch may start before the requested offset; skip what we already have.
                if (offset < next[part.partition]) continue
                assert.equal(offset, next[part.partition], `partition ${part.partition}: gap or reorder at offset ${offset}`)
                out.push({ partition: part.partition, offset: Number(offset), message: m })
                next[part.partition] = offset + 1n
              }
            }
          }
        }
      }
    } finally {
      await cluster.disconnect()
    }
    return out
  }

  function headersEqual(actual, expected) {
    const norm = h =>
      Object.fromEntries(
        Object.entries(h || {}).map(([k, v]) => [k, Array.isArray(v) ? v.map(x => x.toString('hex')) : v.toString('hex')])
      )
    assert.deepEqual(norm(actual), norm(expected))
  }

  // Everything produced comes back once, byte for byte, at the offsets the
  // produce responses promised, in produce order per partition.
  function verify(records, chunkBases, fetched, partitions) {
    assert.equal(fetched.length, records.length, `produced ${records.length}, fetched ${fetched.length}`)
    const byTimestamp = new Map(records.map(r => [r.timestamp, r])) // timestamps are unique
    const seen = new Set()
    const keyPartitions = new Map()
    const lastIndex = {}
    const nextInChunk = new Map() // `${chunk}/${partition}` -> next expected offset
    for (const { partition, offset, message: m } of fetched) {
      assert.ok(partitions.includes(partition), `unexpected partition ${partition}`)
      const r = byTimestamp.get(m.timestamp)
      assert.ok(r, `no produced record has timestamp ${m.timestamp} (at ${partition}/${offset})`)
      assert.ok(!seen.has(r.index), `record #${r.index} fetched twice`)
      seen.add(r.index)
      assert.deepEqual(m.key, r.key, `key of #${r.index}`)
      assert.deepEqual(m.value, r.value, `value of #${r.index}`)
      headersEqual(m.headers, r.headers)
      assert.equal(m.batchContext.timestampType, 0, 'timestamp type must be CreateTime')
      if (r.partition !== null) assert.equal(partition, r.partition, `#${r.index}: partition chosen by the producer`)
      if (r.key !== null) {
        const k = r.key.toString('hex')
        if (!keyPartitions.has(k)) keyPartitions.set(k, partition)
        assert.equal(keyPartitions.get(k), partition, 'a key landed in two partitions')
      }
      assert.ok((lastIndex[partition] ?? -1) < r.index, `partition ${partition}: produce order broken at #${r.index}`)
      lastIndex[partition] = r.index
      const slot = `${r.chunk}/${partition}`
      const expected = nextInChunk.has(slot) ? nextInChunk.get(slot) : chunkBases[r.chunk][partition]
      assert.equal(BigInt(offset), expected, `#${r.index}: offset vs. the produce response's base offset`)
      nextInChunk.set(slot, BigInt(offset) + 1n)
    }
    assert.deepEqual(Object.keys(lastIndex).map(Number).sort(), [...partitions].sort(), 'every partition got records')
  }

  for (const [name, type] of [
    ['none', CompressionTypes.None],
    ['gzip', CompressionTypes.GZIP],
    ['snappy', CompressionTypes.Snappy],
    ['lz4', CompressionTypes.LZ4],
    ['zstd', CompressionTypes.ZSTD],
  ]) {
    test(`round trip, compression ${name}`, { timeout: TEST_TIMEOUT }, async () => {
      const topic = uniqueTopic(`js-${name}`)
      const partitionMetadata = await createTopic(topic, 3)
      const records = makeRecords(N_RECORDS, name)
      const chunkBases = await produce(topic, records, type, partitionMetadata)

      const offsets = await admin.fetchTopicOffsets(topic)
      assert.equal(offsets.reduce((s, o) => s + Number(o.high), 0), N_RECORDS)
      for (const o of offsets) assert.equal(o.low, '0')

      const before = { ...decompressions }
      const fetched = await fetchAll(topic, [0, 1, 2])
      for (const codec of CODECS) {
        const n = decompressions[codec] - before[codec]
        if (codec === type) assert.ok(n > 0, `${name} batches came back without ${name} compression`)
        else assert.equal(n, 0, `${name} batches came back compressed with codec ${codec}`)
      }
      for (const p of [0, 1, 2]) {
        const n = fetched.filter(f => f.partition === p).length
        assert.equal(String(n), offsets.find(o => o.partition === p).high, `high watermark of partition ${p}`)
      }
      verify(records, chunkBases, fetched, [0, 1, 2])
    })
  }

  test('admin: metadata, offsets by timestamp, configs, partitions, delete', { timeout: TEST_TIMEOUT }, async () => {
    const topic = uniqueTopic('js-admin')
    await createTopic(topic, 2, [{ name: 'retention.ms', value: '86400000' }])

    assert.ok((await admin.listTopics()).includes(topic))
    assert.equal(
      await admin.createTopics({ topics: [{ topic, numPartitions: 2, replicationFactor: 1 }], waitForLeaders: false }),
      false,
      'creating an existing topic must report TOPIC_ALREADY_EXISTS'
    )

    const cluster = await admin.describeCluster()
    assert.equal(cluster.brokers.length, 1)
    assert.equal(cluster.brokers[0].host, broker.host)
    assert.equal(cluster.brokers[0].port, broker.port)
    assert.equal(cluster.controller, cluster.brokers[0].nodeId)

    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
    for (const p of topics[0].partitions) {
      assert.equal(p.leader, cluster.brokers[0].nodeId)
      assert.deepEqual(p.replicas, [p.leader])
      assert.deepEqual(p.isr, [p.leader])
    }

    const partitionMetadata = topics[0].partitions
    const records = makeRecords(200, 'admin')
    await produce(topic, records, CompressionTypes.GZIP, partitionMetadata)
    const target = records[120]
    const byTs = await admin.fetchTopicOffsetsByTimestamp(topic, Number(target.timestamp))
    // Every partition answers with the first offset at/after the timestamp (or its end).
    assert.equal(byTs.length, 2)
    const fetched = await fetchAll(topic, [0, 1])
    for (const { partition, offset } of byTs) {
      const first = fetched
        .filter(f => f.partition === partition && BigInt(f.message.timestamp) >= BigInt(target.timestamp))
        .map(f => f.offset)[0]
      const end = fetched.filter(f => f.partition === partition).length
      assert.equal(Number(offset), first ?? end, `offset by timestamp on partition ${partition}`)
    }

    const described = await admin.describeConfigs({
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms'] }],
      includeSynonyms: false,
    })
    const [resource] = described.resources
    assert.equal(resource.errorCode, 0)
    const entry = resource.configEntries.find(e => e.configName === 'retention.ms')
    assert.ok(entry, `retention.ms missing from ${JSON.stringify(resource.configEntries)}`)
    assert.equal(entry.configValue, '86400000')

    await admin.alterConfigs({
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'retention.ms', value: '43200000' }] }],
    })
    const again = await admin.describeConfigs({
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms'] }],
      includeSynonyms: false,
    })
    assert.equal(again.resources[0].configEntries.find(e => e.configName === 'retention.ms').configValue, '43200000')

    await admin.createPartitions({ topicPartitions: [{ topic, count: 4 }], timeout: 30000 })
    const grown = await admin.fetchTopicMetadata({ topics: [topic] })
    assert.deepEqual(grown.topics[0].partitions.map(p => p.partitionId).sort(), [0, 1, 2, 3])

    await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '-1' }] })
    const afterDelete = await admin.fetchTopicOffsets(topic)
    const p0 = afterDelete.find(o => o.partition === 0)
    assert.equal(p0.low, p0.high, 'DeleteRecords to the end moves the log start offset to the high watermark')

    await admin.deleteTopics({ topics: [topic], timeout: 30000 })
    const deadline = Date.now() + 30000
    while ((await admin.listTopics()).includes(topic)) {
      assert.ok(Date.now() < deadline, 'deleted topic still listed after 30s')
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  })

  test('admin: invalid topic names are rejected with INVALID_TOPIC_EXCEPTION', { timeout: TEST_TIMEOUT }, async () => {
    for (const bad of ['bad/name', 'with space', '..', 'x'.repeat(250)]) {
      await assert.rejects(
        admin.createTopics({ topics: [{ topic: bad, numPartitions: 1, replicationFactor: 1 }], waitForLeaders: false }),
        e => findErrorType(e, 'INVALID_TOPIC_EXCEPTION'),
        `topic name ${JSON.stringify(bad)}`
      )
    }
  })

  test('producer: auto-created topic via Metadata', { timeout: TEST_TIMEOUT }, async () => {
    const topic = uniqueTopic('js-auto')
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: true })
    await producer.connect()
    try {
      const result = await producer.send({
        topic,
        acks: -1,
        messages: Array.from({ length: 20 }, (_, i) => ({ key: `k${i}`, value: `v${i}` })),
      })
      assert.ok(result.every(r => r.errorCode === 0))
    } finally {
      await producer.disconnect()
    }
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
    const parts = topics[0].partitions.map(p => p.partitionId)
    const fetched = await fetchAll(topic, parts)
    assert.deepEqual(fetched.map(f => f.message.value.toString()).sort(), Array.from({ length: 20 }, (_, i) => `v${i}`).sort())
  })
})
