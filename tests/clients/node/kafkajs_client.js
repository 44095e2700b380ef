// kafkajs 2.2.4 driver for the samsa real-client tests (run by tests/clients/test_kafkajs.py).
// Usage: node kafkajs_client.js HOST:PORT. Exercises the admin API (create, list, metadata,
// describe configs, create partitions, delete), produces keyed gzip records with headers with
// the plain and the idempotent producer, queries offsets (latest and by timestamp), and, when
// SAMSA_GROUPS=1, reads the records back with a consumer group. Prints one JSON document on
// stdout with everything it produced and observed; exits non-zero on any failure. It only talks
// to the broker it is given and never leaves a connection open.
'use strict';

const { Kafka, CompressionTypes, ConfigResourceTypes, logLevel } = require('kafkajs');

const bootstrap = process.argv[2];
const RECORDS = 200;
const BATCHED = 100;
const TIME_RECORDS = 10;
const BASE_MS = 1_690_000_000_000;

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

function record(i, producerName) {
  return {
    key: `key-${i % 13}`,
    value: `kafkajs-${producerName}-value-${i}`,
    headers: { idx: String(i), client: 'kafkajs' },
  };
}

async function adminChecks(admin) {
  const topic = 'kjs-admin';
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
  check((await admin.listTopics()).includes(topic), 'created topic listed');
  let md = await admin.fetchTopicMetadata({ topics: [topic] });
  check(md.topics[0].partitions.length === 2, 'two partitions');
  await admin.createPartitions({ topicPartitions: [{ topic, count: 4 }] });
  md = await admin.fetchTopicMetadata({ topics: [topic] });
  check(md.topics[0].partitions.length === 4, 'four partitions after createPartitions');
  const configs = await admin.describeConfigs({
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }],
    includeSynonyms: false,
  });
  const entries = configs.resources[0].configEntries;
  check(entries.some((e) => e.configName === 'retention.ms'), 'retention.ms described');
  await admin.deleteTopics({ topics: [topic] });
  for (let i = 0; (await admin.listTopics()).includes(topic); i++) {
    check(i < 50, 'deleted topic still listed');
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function produce(kafka, topic, producerName, idempotent) {
  const producer = kafka.producer(idempotent ? { idempotent: true, maxInFlightRequests: 1 } : {});
  await producer.connect();
  const acked = [];
  const all = [];
  try {
    // One record per send: the reply names its exact partition and offset.
    for (let i = 0; i < RECORDS - BATCHED; i++) {
      const msg = record(i, producerName);
      const [res] = await producer.send({
        topic, acks: -1, compression: CompressionTypes.GZIP, messages: [msg],
      });
      check(res.errorCode === 0, `produce error ${res.errorCode}`);
      acked.push({ ...msg, partition: res.partition, offset: Number(res.baseOffset) });
      all.push(msg);
    }
    // Then many records per send: multi-record gzip batches on several partitions.
    const batch = [];
    for (let i = RECORDS - BATCHED; i < RECORDS; i++) batch.push(record(i, producerName));
    const results = await producer.send({
      topic, acks: -1, compression: CompressionTypes.GZIP, messages: batch,
    });
    check(results.every((r) => r.errorCode === 0), 'batched produce errors');
    all.push(...batch);
  } finally {
    await producer.disconnect();
  }
  return { acked, all };
}

async function offsetsByTime(kafka, admin) {
  const topic = 'kjs-times';
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  const producer = kafka.producer();
  await producer.connect();
  try {
    // One record per send (one batch each): offsets by time are exact at batch boundaries.
    for (let i = 0; i < TIME_RECORDS; i++) {
      const messages = [{ key: 'k', value: `t-${i}`, timestamp: String(BASE_MS + i * 1000) }];
      await producer.send({ topic, acks: -1, messages });
    }
  } finally {
    await producer.disconnect();
  }
  const [mid] = await admin.fetchTopicOffsetsByTimestamp(topic, BASE_MS + 2500);
  check(Number(mid.offset) === 3, `offset by time ${JSON.stringify(mid)}`);
  const [first] = await admin.fetchTopicOffsetsByTimestamp(topic, BASE_MS - 1);
  check(Number(first.offset) === 0, `earliest by time ${JSON.stringify(first)}`);
  const [latest] = await admin.fetchTopicOffsets(topic);
  check(Number(latest.high) === TIME_RECORDS, `latest ${JSON.stringify(latest)}`);
  return { mid: Number(mid.offset), first: Number(first.offset), high: Number(latest.high) };
}

async function consumeWithGroup(kafka, topic, expected) {
  const consumer = kafka.consumer({ groupId: 'samsa-kafkajs-tests' });
  await consumer.connect();
  const got = [];
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`consumed ${got.length}`)), 30000);
      consumer.run({
        eachMessage: async ({ partition, message }) => {
          const headers = {};
          for (const [k, v] of Object.entries(message.headers || {})) headers[k] = v.toString();
          got.push({
            partition, offset: Number(message.offset), key: message.key.toString(),
            value: message.value.toString(), headers,
          });
          if (got.length >= expected) { clearTimeout(timer); resolve(); }
        },
      }).catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return got;
}

async function main() {
  check(bootstrap, 'usage: node kafkajs_client.js HOST:PORT');
  const kafka = new Kafka({
    clientId: 'samsa-tests', brokers: [bootstrap], logLevel: logLevel.WARN,
    retry: { retries: 5 },
  });
  const admin = kafka.admin();
  await admin.connect();
  const out = {};
  try {
    await adminChecks(admin);
    out.admin = 'ok';
    const topics = { plain: 'kjs-gzip', idempotent: 'kjs-idem' };
    out.produced = {};
    for (const [name, topic] of Object.entries(topics)) {
      await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
      out.produced[name] = { topic, ...(await produce(kafka, topic, name, name === 'idempotent')) };
      const offsets = await admin.fetchTopicOffsets(topic);
      const total = offsets.reduce((sum, o) => sum + Number(o.high) - Number(o.low), 0);
      check(total === RECORDS, `${topic}: ${total} records by fetchTopicOffsets`);
    }
    out.times = await offsetsByTime(kafka, admin);
    if (process.env.SAMSA_GROUPS === '1') {
      out.consumed = await consumeWithGroup(kafka, topics.plain, RECORDS);
    }
  } finally {
    await admin.disconnect();
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((error) => {
  process.stderr.write(`kafkajs client failed: ${error.stack || error}\n`);
  process.exit(1);
});
