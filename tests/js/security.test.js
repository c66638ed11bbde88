'use strict'

// KafkaJS over SASL against a vltava broker with Kafka's StandardAuthorizer: PLAIN and
// SCRAM-SHA-256 logins, and ACLs created, described and deleted with KafkaJS's admin client
// deciding what a user may do. Clients keep their defaults apart from the credentials.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const { execFileSync } = require('node:child_process')

const {
  Kafka,
  logLevel,
  AclResourceTypes,
  AclOperationTypes,
  AclPermissionTypes,
  ResourcePatternTypes,
} = require('kafkajs')
const { startBroker, stopAndCheck, vltavaBin } = require('./broker')

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'

const JAAS =
  'org.apache.kafka.common.security.plain.PlainLoginModule required ' +
  'user_admin="admin-secret" user_alice="alice-secret";'

function kafkaAs(broker, sasl) {
  return new Kafka({
    clientId: `vltava-e2e-js-${sasl.username}`,
    brokers: [broker.bootstrap],
    sasl,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 10000,
    requestTimeout: 30000,
    retry: { retries: 2 },
  })
}

const plain = (username) => ({ mechanism: 'plain', username, password: `${username}-secret` })

async function sendOne(kafka, topic) {
  const producer = kafka.producer()
  await producer.connect()
  try {
    await producer.send({ topic, messages: [{ value: 'v' }] })
  } finally {
    await producer.disconnect()
  }
}

test('KafkaJS logs in with PLAIN and SCRAM and its ACL admin calls decide access', { timeout: 120000 }, async () => {
  const broker = await startBroker({
    listeners: 'SASL_PLAINTEXT://127.0.0.1:0',
    overrides: {
      'sasl.enabled.mechanisms': 'PLAIN,SCRAM-SHA-256',
      'listener.name.sasl_plaintext.plain.sasl.jaas.config': JAAS,
      'authorizer.class.name': 'org.apache.kafka.metadata.authorizer.StandardAuthorizer',
      'super.users': 'User:admin',
    },
  })
  try {
    const topic = `acl-${crypto.randomBytes(6).toString('hex')}`
    const admin = kafkaAs(broker, plain('admin')).admin()
    await admin.connect()
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true })

    const alice = kafkaAs(broker, plain('alice'))
    await assert.rejects(sendOne(alice, topic), (e) => {
      assert.match(String(e.type || e.message), /TOPIC_AUTHORIZATION_FAILED|authoriz/i)
      return true
    })

    const binding = {
      resourceType: AclResourceTypes.TOPIC,
      resourceName: topic,
      resourcePatternType: ResourcePatternTypes.LITERAL,
      principal: 'User:alice',
      host: '*',
      operation: AclOperationTypes.WRITE,
      permissionType: AclPermissionTypes.ALLOW,
    }
    await admin.createAcls({ acl: [binding] })
    await sendOne(alice, topic)

    const { resources } = await admin.describeAcls({
      resourceType: AclResourceTypes.TOPIC,
      resourceName: topic,
      resourcePatternType: ResourcePatternTypes.MATCH,
      operation: AclOperationTypes.ANY,
      permissionType: AclPermissionTypes.ANY,
    })
    assert.equal(resources.length, 1)
    assert.deepEqual(
      resources[0].acls.map((a) => [a.principal, a.operation, a.permissionType]),
      [['User:alice', AclOperationTypes.WRITE, AclPermissionTypes.ALLOW]]
    )

    const { filterResponses } = await admin.deleteAcls({
      filters: [
        {
          resourceType: AclResourceTypes.TOPIC,
          resourceName: topic,
          resourcePatternType: ResourcePatternTypes.LITERAL,
          principal: 'User:alice',
          operation: AclOperationTypes.ANY,
          permissionType: AclPermissionTypes.ANY,
        },
      ],
    })
    assert.equal(filterResponses[0].matchingAcls.length, 1)
    await assert.rejects(sendOne(alice, topic))
    await admin.disconnect()

    // A SCRAM user made with the CLI (as admin, over PLAIN) logs KafkaJS in.
    execFileSync(vltavaBin(), [
      'user', 'scram', 'set', 'carol', '--password', 'carol-pw',
      '-b', broker.bootstrap,
      '-X', 'security.protocol=SASL_PLAINTEXT', '-X', 'sasl.mechanism=PLAIN',
      '-X', 'sasl.username=admin', '-X', 'sasl.password=admin-secret',
    ])
    const carol = kafkaAs(broker, { mechanism: 'scram-sha-256', username: 'carol', password: 'carol-pw' }).admin()
    await carol.connect()
    // Logged in; with no ACL carol sees no topic.
    const listed = await carol.listTopics()
    assert.ok(!listed.includes(topic), `${listed}`)
    await carol.disconnect()
    const wrong = kafkaAs(broker, { mechanism: 'scram-sha-256', username: 'carol', password: 'nope' }).admin()
    await assert.rejects(wrong.connect())
  } finally {
    await stopAndCheck(broker)
  }
})
