'use strict'

// Consumer groups end to end with KafkaJS 2.2.4 (classic group protocol):
// consumer.run() with eachMessage in a group of two members over a
// 4-partition topic, offsets committed by KafkaJS's auto-commit (after every
// batch and on disconnect), a fresh member resuming from the committed
// offsets, and the admin group APIs (fetchOffsets / describeGroups /
// listGroups / deleteGroups).

const { describe, test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')

const { Partitioners, AssignerProtocol } = require('kafkajs')

const { startBroker, kafkaFor, stopAndCheck } = require('./broker')

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'

const PARTITIONS = 4
const N_RECORDS = 1000
const TEST_TIMEOUT = 120000 // ceiling; the test takes ~20 s

const unique = prefix => `${prefix}-${crypto.randomBytes(6).toString('hex')}`
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

async function waitUntil(predicate, { timeout = 30000, interval = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout
  let lastError
  for (;;) {
    try {
      const result = await predicate()
      if (result) return result
    } catch (e) {
      lastError = e
    }
    if (Date.now() >= deadline) {
      const detail = typeof what === 'function' ? what() : what
      throw new Error(`timed out after ${timeout / 1000}s waiting for ${detail}` + (lastError ? ` (last error: ${lastError.message})` : ''))
    }
    await sleep(interval)
  }
}

describe('KafkaJS consumer groups against vltava', { timeout: 300000 }, () => {
  let broker
  let kafka
  let admin

  before(async () => {
    broker = await startBroker()
    kafka = kafkaFor(broker, 'vltava-e2e-js-groups')
    admin = kafka.admin()
    await admin.connect()
  })

  after(async () => {
    if (admin) await admin.disconnect()
    if (broker) await stopAndCheck(broker)
  })

  // Produces value strings to explicit partitions; returns the base offsets.
  async function produce(topic, messages) {
    const producer = kafka.producer({
      createPartitioner: Partitioners.DefaultPartitioner,
      allowAutoTopicCreation: false,
    })
    await producer.connect()
    try {
      for (let i = 0; i < messages.length; i += 250) {
        const meta = await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 250) })
        for (const m of meta) assert.equal(m.errorCode, 0, `produce error ${JSON.stringify(m)}`)
      }
    } finally {
      await producer.disconnect()
    }
  }

  // One group member: consumer.run() with eachMessage recording every
  // message, plus the assignment from its latest GROUP_JOIN event.
  async function startMember(name, groupId, topic) {
    const consumer = kafka.consumer({
      groupId,
      sessionTimeout: 10000,
      rebalanceTimeout: 20000,
      heartbeatInterval: 500,
      maxWaitTimeInMs: 200,
      retry: { retries: 5 },
    })
    const member = { name, consumer, records: [], assignment: null, joins: [], crashes: [], memberId: null }
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      member.assignment = new Set(payload.memberAssignment[topic] || [])
      member.memberId = payload.memberId
      member.joins.push([...member.assignment].sort())
    })
    consumer.on(consumer.events.CRASH, ({ payload }) => member.crashes.push(payload.error))
    await consumer.connect()
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        member.records.push({ partition, offset: Number(message.offset), value: message.value.toString() })
      },
    })
    return member
  }

  const noCrashes = members => {
    for (const m of members) assert.deepEqual(m.crashes, [], `consumer ${m.name} crashed: ${m.crashes.map(e => e && e.stack)}`)
  }

  // Waits for the members' assignments to have the given sizes and to cover
  // all partitions exactly once, and to stay so for a second.
  async function waitAssignments(members, sizes, timeout = 30000) {
    const current = () => members.map(m => (m.assignment ? [...m.assignment].sort() : null))
    const settled = () => {
      noCrashes(members)
      const a = current()
      if (a.some(x => x === null)) return null
      const all = a.flat()
      const ok =
        JSON.stringify(a.map(x => x.length).sort()) === JSON.stringify([...sizes].sort()) &&
        all.length === PARTITIONS &&
        new Set(all).size === PARTITIONS
      return ok ? JSON.stringify(a) : null
    }
    const deadline = Date.now() + timeout
    for (;;) {
      const first = await waitUntil(settled, {
        timeout: Math.max(100, deadline - Date.now()),
        what: () => `assignments of sizes ${sizes} (now ${JSON.stringify(current())}, joins ${JSON.stringify(members.map(m => m.joins))})`,
      })
      await sleep(1000)
      if (settled() === first) return current()
      if (Date.now() >= deadline) throw new Error(`assignments kept changing: ${JSON.stringify(members.map(m => m.joins))}`)
    }
  }

  async function waitConsumed(members, expected, { timeout = 30000, settle = 1500 } = {}) {
    const count = () => members.reduce((n, m) => n + m.records.length, 0)
    await waitUntil(
      () => {
        noCrashes(members)
        return count() >= expected
      },
      { timeout, what: () => `${expected} records (have ${members.map(m => `${m.name}: ${m.records.length}`).join(', ')})` }
    )
    await sleep(settle) // catch duplicates and extras
    noCrashes(members)
  }

  async function committed(groupId, topic) {
    const offsets = await admin.fetchOffsets({ groupId, topics: [topic] })
    assert.equal(offsets.length, 1)
    assert.equal(offsets[0].topic, topic)
    return Object.fromEntries(offsets[0].partitions.map(p => [p.partition, Number(p.offset)]))
  }

  async function highWatermarks(topic) {
    const offsets = await admin.fetchTopicOffsets(topic)
    return Object.fromEntries(offsets.map(p => [p.partition, Number(p.high)]))
  }

  const listedGroupIds = async () => (await admin.listGroups()).groups.map(g => g.groupId)

  test('two members share 4 partitions, consume exactly once, offsets survive; admin group APIs', { timeout: TEST_TIMEOUT }, async () => {
    const topic = unique('js-grp')
    const groupId = unique('js-grp-g')
    const created = await admin.createTopics({
      topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
      waitForLeaders: true,
      timeout: 30000,
    })
    assert.equal(created, true)

    const members = []
    try {
      // -- two members, 2 partitions each ----------------------------------
      members.push(await startMember('c1', groupId, topic))
      members.push(await startMember('c2', groupId, topic))
      const [assign1, assign2] = await waitAssignments(members, [2, 2])
      const [c1, c2] = members

      const messages = Array.from({ length: N_RECORDS }, (_, i) => ({ partition: i % PARTITIONS, value: `r1-${String(i).padStart(5, '0')}` }))
      await produce(topic, messages)
      await waitConsumed(members, N_RECORDS)

      assert.deepEqual([c1.assignment, c2.assignment].map(a => [...a].sort()), [assign1, assign2], 'assignment moved while consuming')
      for (const m of members) {
        const foreign = m.records.filter(r => !m.assignment.has(r.partition))
        assert.deepEqual(foreign.slice(0, 5), [], `${m.name} got records of partitions it does not own`)
      }
      const all = [...c1.records, ...c2.records]
      const seen = new Map()
      const dups = []
      for (const r of all) {
        const k = `${r.partition}/${r.offset}`
        if (seen.has(k)) dups.push(k)
        seen.set(k, r)
      }
      assert.deepEqual(dups.slice(0, 10), [], `${dups.length} records delivered more than once`)
      assert.deepEqual(all.map(r => r.value).sort(), messages.map(m => m.value).sort(), 'consumed values differ from produced')
      for (let p = 0; p < PARTITIONS; p++) {
        const offs = all.filter(r => r.partition === p).map(r => r.offset)
        assert.deepEqual(offs, Array.from({ length: N_RECORDS / PARTITIONS }, (_, i) => i), `partition ${p}: offsets not dense/in order`)
      }

      // -- admin while the group is active ----------------------------------
      const high = await highWatermarks(topic)
      assert.deepEqual(high, { 0: 250, 1: 250, 2: 250, 3: 250 })
      let last
      await waitUntil(async () => JSON.stringify((last = await committed(groupId, topic))) === JSON.stringify(high), {
        timeout: 10000,
        what: () => `committed offsets ${JSON.stringify(high)} (last ${JSON.stringify(last)})`,
      })

      const { groups: described } = await admin.describeGroups([groupId])
      assert.equal(described.length, 1)
      const g = described[0]
      assert.equal(g.groupId, groupId)
      assert.equal(g.errorCode, 0)
      assert.equal(g.state, 'Stable')
      assert.equal(g.protocolType, 'consumer')
      assert.equal(g.protocol, 'RoundRobinAssigner')
      assert.equal(g.members.length, 2)
      const byMember = Object.fromEntries(
        g.members.map(m => {
          const decoded = AssignerProtocol.MemberAssignment.decode(m.memberAssignment)
          assert.deepEqual(Object.keys(decoded.assignment), [topic])
          assert.deepEqual(AssignerProtocol.MemberMetadata.decode(m.memberMetadata).topics, [topic])
          assert.equal(m.clientId, 'vltava-e2e-js-groups')
          return [m.memberId, [...decoded.assignment[topic]].sort()]
        })
      )
      assert.deepEqual(byMember, { [c1.memberId]: assign1, [c2.memberId]: assign2 })

      assert.ok((await listedGroupIds()).includes(groupId), 'active group missing from listGroups')
      const listedEntry = (await admin.listGroups()).groups.find(x => x.groupId === groupId)
      assert.equal(listedEntry.protocolType, 'consumer')

      await assert.rejects(admin.deleteGroups([groupId]), err => {
        assert.equal(err.name, 'KafkaJSDeleteGroupsError', err.stack)
        assert.deepEqual(err.groups.map(x => [x.groupId, x.error && x.error.type]), [[groupId, 'NON_EMPTY_GROUP']])
        return true
      })

      // -- everyone leaves; a new member resumes from the commits -----------
      await c1.consumer.disconnect()
      await c2.consumer.disconnect()
      members.length = 0
      noCrashes([c1, c2])
      const empty = (await admin.describeGroups([groupId])).groups[0]
      assert.equal(empty.state, 'Empty')
      assert.deepEqual(empty.members, [])
      assert.deepEqual(await committed(groupId, topic), high, 'commits changed when the members left')

      const c3 = await startMember('c3', groupId, topic)
      members.push(c3)
      await waitAssignments([c3], [PARTITIONS])
      await sleep(3000) // time enough to re-fetch anything not committed
      noCrashes([c3])
      assert.deepEqual(c3.records.slice(0, 10), [], `${c3.records.length} already-committed records were re-delivered`)

      // It is really consuming: new records arrive, starting at the commits.
      const more = Array.from({ length: 20 }, (_, i) => ({ partition: i % PARTITIONS, value: `r2-${i}` }))
      await produce(topic, more)
      await waitConsumed([c3], more.length)
      assert.deepEqual(
        c3.records.map(r => [r.partition, r.offset, r.value]).sort((a, b) => a[0] - b[0] || a[1] - b[1]),
        more.map((m, i) => [m.partition, 250 + Math.floor(i / PARTITIONS), m.value]).sort((a, b) => a[0] - b[0] || a[1] - b[1])
      )
      await c3.consumer.disconnect()
      members.length = 0
      assert.deepEqual(await committed(groupId, topic), { 0: 255, 1: 255, 2: 255, 3: 255 })

      // -- delete the (now empty) group -------------------------------------
      assert.ok((await listedGroupIds()).includes(groupId), 'empty group missing from listGroups')
      const deleted = await admin.deleteGroups([groupId])
      assert.deepEqual(deleted.map(x => [x.groupId, x.errorCode]), [[groupId, 0]])
      assert.ok(!(await listedGroupIds()).includes(groupId), 'deleted group still in listGroups')
      assert.deepEqual(await committed(groupId, topic), { 0: -1, 1: -1, 2: -1, 3: -1 }, 'offsets survived deleteGroups')
      const dead = (await admin.describeGroups([groupId])).groups[0]
      assert.equal(dead.state, 'Dead')
      assert.deepEqual(dead.members, [])
      await assert.rejects(admin.deleteGroups([groupId]), err => {
        assert.deepEqual(err.groups.map(x => [x.groupId, x.error && x.error.type]), [[groupId, 'GROUP_ID_NOT_FOUND']])
        return true
      })
    } finally {
      for (const m of members) await m.consumer.disconnect().catch(() => {})
    }
  })
})
