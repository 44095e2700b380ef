// kafkajs 2.2.4 consumer-group member for tests/clients/test_groups.py.
// Usage: node groups_member.js HOST:PORT TOPIC GROUP. Subscribes from the beginning, prints one
// JSON line per assignment change ({"ev":"assigned"}), per record ({"ev":"rec"}) and per commit
// ({"ev":"committed"}); commits after every batch; on SIGTERM disconnects (leaving the group)
// and prints {"ev":"closed"}. Talks only to the broker it is given.
'use strict';

const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, group] = process.argv.slice(2);
const start = Date.now();
let last = null;

function emit(ev) {
  process.stdout.write(JSON.stringify(ev) + '\n');
}

function assigned(parts) {
  const sorted = [...parts].sort((x, y) => x - y);
  const key = JSON.stringify(sorted);
  if (key !== last) {
    last = key;
    emit({ ev: 'assigned', parts: sorted, since_start_ms: Date.now() - start });
  }
}

async function main() {
  const kafka = new Kafka({
    clientId: 'samsa-groups', brokers: [bootstrap], logLevel: logLevel.WARN,
  });
  const consumer = kafka.consumer({
    groupId: group, sessionTimeout: 6000, heartbeatInterval: 500, rebalanceTimeout: 10000,
  });
  const { GROUP_JOIN } = consumer.events;
  consumer.on(GROUP_JOIN, (e) => {
    const mine = e.payload.memberAssignment[topic] || [];
    assigned(mine);
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
      for (const m of batch.messages) {
        emit({ ev: 'rec', p: batch.partition, o: Number(m.offset) });
        resolveOffset(m.offset);
      }
      if (batch.messages.length > 0) {
        const next = Number(batch.messages[batch.messages.length - 1].offset) + 1;
        await consumer.commitOffsets([
          { topic, partition: batch.partition, offset: String(next) },
        ]);
        emit({ ev: 'committed' });
      }
      await heartbeat();
    },
  });
  process.on('SIGTERM', async () => {
    await consumer.disconnect();
    emit({ ev: 'closed' });
    process.exit(0);
  });
}

main().catch((e) => {
  process.stderr.write(`groups_member: ${e.stack || e}\n`);
  process.exit(1);
});
