'use strict'

// KafkaJS 2.2.x against a three-node cluster, with its defaults: an RF=3 topic with
// min.insync.replicas=2, the metadata KafkaJS sees (leaders, replicas, ISR), a producer
// (acks=-1 by default) going on while a partition leader is killed with SIGKILL, and a
// consumer group reading every acknowledged record exactly once.

const { test, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const { Kafka, logLevel } = require('kafkajs')

const { startCluster, stopAndCheck } = require('./broker')

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'
const LOG_LEVEL = logLevel[String(process.env.KAFKAJS_LOG_LEVEL || 'nothing').toUpperCase()] ?? logLevel.NOTHING

let nodes = []
after(async () => {
  for (const n of nodes) {
    if (n.alive()) await stopAndCheck(n)
  }
})

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

async function waitFor(what, fn, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ''}`)
    await sleep(200)
  }
}

function kafka(brokers, clientId) {
  return new Kafka({ clientId, brokers: brokers.map(n => n.bootstrap), logLevel: LOG_LEVEL })
}

// partition -> { leader, replicas, isr } through a fresh admin client of `via`.
async function describe(via, topic) {
  const admin = kafka(via, 'vltava-js-cluster-admin').admin()
  await admin.connect()
  try {
    const md = await admin.fetchTopicMetadata({ topics: [topic] })
    const out = {}
    for (const p of md.topics[0].partitions) {
      out[p.partitionId] = {
        leader: p.leader,
        replicas: [...p.replicas].sort(),
        isr: [...p.isr].sort(),
      }
    }
    return out
  } finally {
    await admin.disconnect()
  }
}

test('a replicated topic through a leader failover', { timeout: 240000 }, async () => {
  nodes = await startCluster(3)
  const topic = `rep-${crypto.randomBytes(6).toString('hex')}`
  const admin = kafka(nodes, 'vltava-js-cluster').admin()
  await admin.connect()
  await admin.createTopics({
    topics: [
      {
        topic,
        numPartitions: 3,
        replicationFactor: 3,
        configEntries: [{ name: 'min.insync.replicas', value: '2' }],
      },
    ],
  })
  await admin.disconnect()

  const ids = [1, 2, 3]
  const before = await waitFor('three in-sync replicas seen from every node', async () => {
    const seen = []
    for (const n of nodes) seen.push(await describe([n], topic))
    const ok = seen.every(
      s =>
        Object.keys(s).length === 3 &&
        Object.values(s).every(
          p => ids.includes(p.leader) && p.replicas.join() === '1,2,3' && p.isr.join() === '1,2,3'
        )
    )
    return ok && seen.every(s => JSON.stringify(s) === JSON.stringify(seen[0])) ? seen[0] : null
  })

  const producer = kafka(nodes, 'vltava-js-cluster-producer').producer()
  await producer.connect()
  const acked = []
  const send = async from => {
    for (let i = from; i < from + 200; i += 20) {
      const messages = []
      for (let j = i; j < i + 20; j++) messages.push({ key: `k${j}`, value: `v${j}` })
      await producer.send({ topic, messages })
      acked.push(...messages.map(m => m.value))
    }
  }
  await send(0)

  // The leader of partition 0 dies; its partitions move to in-sync followers and the
  // producer (retrying as KafkaJS does by default) goes on.
  const victimId = before[0].leader
  await nodes[victimId - 1].kill()
  const live = nodes.filter(n => n.alive())
  await waitFor('new leaders without the dead broker', async () => {
    const d = await describe(live, topic)
    return Object.values(d).every(p => p.leader !== victimId && p.leader > 0 && !p.isr.includes(victimId))
  })
  await send(200)
  await producer.disconnect()
  assert.equal(acked.length, 400)

  const consumer = kafka(live, 'vltava-js-cluster-consumer').consumer({ groupId: `g-${crypto.randomBytes(4).toString('hex')}` })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  const got = new Map()
  await consumer.run({
    eachMessage: async ({ message }) => {
      const v = message.value.toString()
      got.set(v, (got.get(v) || 0) + 1)
    },
  })
  await waitFor('every acknowledged record read', async () => acked.every(v => got.has(v)), 60000)
  await consumer.disconnect()
  const twice = [...got].filter(([, n]) => n > 1)
  assert.deepEqual(twice, [], 'records read more than once')
})
