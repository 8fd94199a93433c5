// An Avtomatika worker in Node.js: one gRPC stream (WorkerService.Connect)
// built from proto/avtomatika/v1 at run time with @grpc/proto-loader.
//
// It says Hello with its skills, resources and credits, runs `echo` tasks
// (JSON params in, the same JSON back, optionally after `sleep_ms`), gives a
// credit back after every task, answers heartbeats with its own, stops a
// task when the server cancels it (and acknowledges), and drains on
// SIGTERM/SIGINT or when the server asks.
//
// Settings (environment):
//   ORCHESTRATOR_GRPC  host:port of the orchestrator's gRPC port (localhost:50051)
//   WORKER_TOKEN       the x-worker-token (global or this worker's own)
//   WORKER_ID          the worker id (node-worker-<pid>)
//   MAX_CONCURRENCY    tasks run at once, the credits granted up front (4)
//   PROTO_ROOT         the repository root holding proto/ and third_party/ (../..)
//   AVTOMATIKA_TLS_CA    TLS: the CA bundle the server's certificate is checked
//                        against (PEM); unset with no certificate: plaintext
//   AVTOMATIKA_TLS_CERT  mutual TLS: this worker's certificate (PEM), whose
//   AVTOMATIKA_TLS_KEY   common name or a DNS name is WORKER_ID when the server
//                        binds identities; and its unencrypted key
"use strict";

const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const address = process.env.ORCHESTRATOR_GRPC || "localhost:50051";
const token = process.env.WORKER_TOKEN || "";
const workerId = process.env.WORKER_ID || `node-worker-${process.pid}`;
const maxConcurrency = Number(process.env.MAX_CONCURRENCY || 4);
// The largest message either way: the server's default MAX_PAYLOAD_BYTES
// (4 MiB) plus 1 MiB of envelope, as the Python SDK. The Hello tells the
// server, which fails a task too big for it instead of sending it.
const maxMessageBytes = Number(process.env.MAX_MESSAGE_BYTES || 5 * 1024 * 1024);
const channelOptions = {
  "grpc.max_receive_message_length": maxMessageBytes,
  "grpc.max_send_message_length": maxMessageBytes,
};
const root = process.env.PROTO_ROOT || path.join(__dirname, "..", "..");

const definition = protoLoader.loadSync("avtomatika/v1/worker_service.proto", {
  includeDirs: [path.join(root, "proto"), path.join(root, "third_party")],
  keepCase: true, // field names as in the .proto (task_id, not taskId)
  longs: Number, // epoch milliseconds fit in a double
  enums: String,
  defaults: true,
  oneofs: true, // message.kind names the field set in a oneof
});
const v1 = grpc.loadPackageDefinition(definition).avtomatika.v1;

const JSON_ENCODING = "json/plain";
const encode = (value) => ({ encoding: JSON_ENCODING, data: Buffer.from(JSON.stringify(value)) });
const decode = (payload) =>
  payload && payload.data && payload.data.length ? JSON.parse(payload.data.toString("utf8")) : {};

function log(...args) {
  console.log(`[${workerId}]`, ...args);
}

// Skills: async (params, signal) -> JSON object. `signal` aborts on cancel.
const skills = {
  async echo(params, signal) {
    if (params.sleep_ms) {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(resolve, params.sleep_ms);
        signal.addEventListener("abort", () => {
          clearTimeout(timer);
          reject(new Error("cancelled"));
        });
      });
    }
    return { echoed: params, worker: workerId, language: "node" };
  },
};

const running = new Map(); // task_id -> AbortController
let draining = false;
let heartbeat = null;

const metadata = new grpc.Metadata();
metadata.set("x-worker-token", token);
// TLS when any certificate file is named, as the Python SDK does; a
// certificate without its key (or the reverse) is a mistake, not plaintext.
function channelCredentials() {
  const read = (name) => (process.env[name] ? fs.readFileSync(process.env[name]) : null);
  const ca = read("AVTOMATIKA_TLS_CA");
  const cert = read("AVTOMATIKA_TLS_CERT");
  const key = read("AVTOMATIKA_TLS_KEY");
  if (!cert !== !key) {
    throw new Error("AVTOMATIKA_TLS_CERT and AVTOMATIKA_TLS_KEY must be set together");
  }
  if (!ca && !cert) {
    return grpc.credentials.createInsecure();
  }
  return grpc.credentials.createSsl(ca, key, cert);
}

const client = new v1.WorkerService(address, channelCredentials(), channelOptions);
const call = client.Connect(metadata);

function send(message) {
  call.write(message);
}

function hangUpIfDrained() {
  if (draining && running.size === 0) {
    clearInterval(heartbeat);
    call.end();
  }
}

async function run(task) {
  const controller = new AbortController();
  running.set(task.task_id, controller);
  const base = { task_id: task.task_id, job_id: task.job_id, worker_id: workerId };
  try {
    const skill = skills[task.type];
    if (!skill) throw Object.assign(new Error(`no skill ${task.type}`), { permanent: true });
    const data = await skill(decode(task.params), controller.signal);
    send({ result: { ...base, status: "TASK_RESULT_STATUS_SUCCESS", data: encode(data) } });
  } catch (error) {
    if (controller.signal.aborted) {
      // The server cancelled it and already knows: the CancelAck went out.
      send({ result: { ...base, status: "TASK_RESULT_STATUS_CANCELLED" } });
    } else {
      const code = error.permanent ? "ERROR_CODE_PERMANENT" : "ERROR_CODE_TRANSIENT";
      send({
        result: { ...base, status: "TASK_RESULT_STATUS_FAILURE", error: { code, message: String(error.message) } },
      });
    }
  } finally {
    running.delete(task.task_id);
    if (!draining) send({ credit: { credits: 1 } });
    hangUpIfDrained();
  }
}

call.on("data", (message) => {
  switch (message.kind) {
    case "welcome": {
      const interval = message.welcome.heartbeat_interval_ms || 10000;
      log(`welcomed; heartbeats every ${interval} ms`);
      heartbeat = setInterval(() => send({ heartbeat: { sent_at_ms: Date.now() } }), interval);
      break;
    }
    case "task":
      run(message.task);
      break;
    case "cancel": {
      const controller = running.get(message.cancel.task_id);
      log(`cancel ${message.cancel.task_id}: ${message.cancel.reason}`);
      send({ cancel_ack: { task_id: message.cancel.task_id } });
      if (controller) controller.abort();
      break;
    }
    case "drain":
      log(`drain: ${message.drain.reason}`);
      draining = true;
      hangUpIfDrained();
      break;
    case "result_ack":
      if (!message.result_ack.accepted) log(`result ignored: ${message.result_ack.reason}`);
      break;
    case "heartbeat":
      break; // its arrival is the point
    default:
      log(`unknown message ${message.kind}`);
  }
});

call.on("error", (error) => {
  clearInterval(heartbeat);
  log(`stream failed: ${error.code} ${error.details}`);
  process.exitCode = 1;
});

call.on("end", () => {
  clearInterval(heartbeat);
  log("stream ended");
  client.close();
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    if (draining) return;
    draining = true;
    send({ drain: { reason: `node worker got ${signal}` } });
    hangUpIfDrained();
  });
}

send({
  hello: {
    registration: {
      worker_id: workerId,
      worker_type: "node",
      skills: Object.keys(skills),
      resources: {
        max_concurrent_tasks: maxConcurrency,
        cpu_cores: os.cpus().length,
        ram_gb: os.totalmem() / 2 ** 30,
      },
      cost_per_skill: { echo: 0.001 },
      labels: { language: "node" },
      installed_software: { node: process.version },
    },
    initial_credits: maxConcurrency,
    max_receive_message_bytes: maxMessageBytes,
  },
});
log(`connecting to ${address}`);
