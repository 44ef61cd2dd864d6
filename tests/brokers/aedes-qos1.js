// aedes-qos1.js - an MQTT broker that supports QoS 0 and 1 only, for the
// interoperability test tests/integration/qos1_broker.sh.
//
// Usage: node aedes-qos1.js --port PORT [--host 127.0.0.1] [--log FILE]
//                           [--exit-after SECONDS]
//
// Cloud brokers do not all speak QoS 2 (AWS IoT Core and Azure IoT Hub
// support QoS 0 and 1 only).  Azure IoT Hub documents this pair of rules: a
// SUBSCRIBE at QoS 2 is granted QoS 1 in the SUBACK, and a PUBLISH at QoS 2
// closes the connection.  This broker is Aedes (in-memory persistence: a
// restart loses every session) with those two rules:
//
//  - Subscriptions: every requested QoS is capped at 1, both in the SUBACK
//    and in what is delivered.  authorizeSubscribe caps the delivery QoS
//    (and the subscriptions a persistent session restores), but Aedes 1.2.0
//    takes the SUBACK's granted QoS from the SUBSCRIBE packet before
//    authorizeSubscribe runs, so the SUBACK would still say 2.  The cap is
//    therefore also applied to the SUBSCRIBE packet as it is parsed, ahead
//    of Aedes' own handler (client._parser, an Aedes internal: the broker
//    exits with status 3 when it is not there, so a changed Aedes fails the
//    test instead of granting QoS 2 unseen).
//  - Publishes at QoS 2 are refused: authorizePublish fails, and Aedes closes
//    the connection without an answer (MQTT-3.3.5-2).  They are not
//    downgraded: the acknowledgement flow is fixed by the sender's QoS
//    (PUBREC, PUBREL, PUBCOMP for QoS 2), so a broker answering a QoS 2
//    PUBLISH with a PUBACK would break the client's flow, not model a
//    broker that caps QoS.
//
// Loopback only: --host must be a 127.0.0.0/8 address or ::1.  The broker
// exits by itself after --exit-after seconds (default 600), and cleanly on
// SIGTERM or SIGINT.
//
// The log (--log FILE, appended and flushed line by line; standard output
// without it) has one line per event, fields separated by single spaces:
//
//   <epoch.ms> listening host=H port=P aedes=V max-qos=1
//   <epoch.ms> connect client=ID clean=true|false session=present|new
//   <epoch.ms> subscribe client=ID topic=T requested=Q granted=G
//   <epoch.ms> publish client=ID topic=T qos=Q dup=true|false
//   <epoch.ms> refuse client=ID topic=T qos=2 dup=true|false mid=N (closing
//              the connection)
//   <epoch.ms> disconnect client=ID
//   <epoch.ms> error client=ID MESSAGE
//   <epoch.ms> exit REASON
//
// Exit status: 0 after a signal or --exit-after, 2 for a usage error, 3 when
// Aedes' internals are not what this file expects, 1 for anything else.

import { appendFileSync } from 'node:fs'
import { createServer, isIP } from 'node:net'
import { Aedes } from 'aedes'

const MAX_QOS = 1

function usage (msg) {
  process.stderr.write(`aedes-qos1.js: ${msg}\n` +
    'usage: node aedes-qos1.js --port PORT [--host 127.0.0.1] [--log FILE] ' +
    '[--exit-after SECONDS]\n')
  process.exit(2)
}

function parseArgs (argv) {
  const o = { host: '127.0.0.1', port: 0, log: null, exitAfter: 600 }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const v = argv[i + 1]
    if (v === undefined) usage(`${a} needs a value`)
    if (a === '--port') o.port = Number(v)
    else if (a === '--host') o.host = v
    else if (a === '--log') o.log = v
    else if (a === '--exit-after') o.exitAfter = Number(v)
    else usage(`unknown option "${a}"`)
    i++
  }
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) usage('--port must be 1 to 65535')
  if (!Number.isFinite(o.exitAfter) || o.exitAfter <= 0) usage('--exit-after must be a positive number of seconds')
  const loopback = (isIP(o.host) === 4 && o.host.startsWith('127.')) || o.host === '::1'
  if (!loopback) usage(`--host "${o.host}" is not a loopback address`)
  return o
}

const opts = parseArgs(process.argv.slice(2))

function log (line) {
  const text = `${(Date.now() / 1000).toFixed(3)} ${line}\n`
  if (opts.log) appendFileSync(opts.log, text)
  else process.stdout.write(text)
}

const broker = await Aedes.createBroker()

// Delivery QoS of new and restored subscriptions (see the header).
broker.authorizeSubscribe = (client, sub, callback) => {
  sub.qos = Math.min(sub.qos, MAX_QOS)
  callback(null, sub)
}

broker.authorizePublish = (client, packet, callback) => {
  if (packet.topic.startsWith('$SYS/')) {
    return callback(new Error('$SYS/ topic is reserved'))
  }
  if (packet.qos > MAX_QOS) {
    log(`refuse client=${client ? client.id : '-'} topic=${packet.topic} ` +
      `qos=${packet.qos} dup=${!!packet.dup} mid=${packet.messageId} ` +
      '(closing the connection)')
    return callback(new Error(`QoS ${packet.qos} is not supported`))
  }
  callback(null)
}

broker.on('connackSent', (connack, client) => {
  if (connack.returnCode !== 0) return
  log(`connect client=${client.id} clean=${client.clean} ` +
    `session=${connack.sessionPresent ? 'present' : 'new'}`)
})
broker.on('clientDisconnect', (client) => log(`disconnect client=${client.id}`))
broker.on('clientError', (client, err) => log(`error client=${client.id} ${err.message}`))
broker.on('connectionError', (client, err) => log(`error client=- ${err.message}`))
broker.on('publish', (packet, client) => {
  if (!client) return // the broker's own $SYS messages
  log(`publish client=${client.id} topic=${packet.topic} qos=${packet.qos} ` +
    `dup=${!!packet.dup}`)
})

// The SUBACK's granted QoS (see the header): capped as the packet is parsed.
// What was asked is remembered per subscription, for the log.
const requested = new WeakMap()
function capSubscribe (packet) {
  if (packet.cmd !== 'subscribe') return
  for (const s of packet.subscriptions) {
    requested.set(s, s.qos)
    s.qos = Math.min(s.qos, MAX_QOS)
  }
}
broker.on('subscribe', (subs, client) => {
  for (const s of subs) {
    const asked = requested.has(s) ? requested.get(s) : '-'
    log(`subscribe client=${client.id} topic=${s.topic} requested=${asked} ` +
      `granted=${s.qos}`)
  }
})

function handle (conn) {
  const client = broker.handle(conn)
  if (!client || !client._parser || typeof client._parser.prependListener !== 'function') {
    log('exit aedes internals changed: client._parser is missing')
    process.exit(3)
  }
  client._parser.prependListener('packet', capSubscribe)
}

const server = createServer(handle)
let stopping = false

function stop (reason, status) {
  if (stopping) return
  stopping = true
  log(`exit ${reason}`)
  // Whatever happens to the graceful close, the process ends.
  setTimeout(() => process.exit(status), 2000).unref()
  server.close()
  broker.close(() => process.exit(status))
}

server.on('error', (err) => {
  log(`exit ${err.message}`)
  process.exit(1)
})
server.listen(opts.port, opts.host, () => {
  log(`listening host=${opts.host} port=${opts.port} aedes=${broker.version} ` +
    `max-qos=${MAX_QOS}`)
})

process.on('SIGTERM', () => stop('SIGTERM', 0))
process.on('SIGINT', () => stop('SIGINT', 0))
setTimeout(() => stop(`--exit-after ${opts.exitAfter}`, 0), opts.exitAfter * 1000).unref()
// The timer above is unref'd so that it never holds the process; the server
// does, until stop().
