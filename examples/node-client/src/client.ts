// An Avtomatika client in TypeScript: JobService over gRPC (HTTP/2), with the
// stubs generated from proto/avtomatika/v1 (clients/typescript, `make stubs`)
// and Connect's gRPC transport for Node.js.
//
// It creates an echo job and follows it with StreamJobEvents until it has
// finished; creates a second one (a long task), cancels it as soon as it
// waits for its worker and follows it until it is cancelled; then lists the
// newest jobs. Any error ends the process with exit status 1.
//
// Settings (a flag, else the environment variable, else the default):
//   --address   ORCHESTRATOR_GRPC         host:port of the gRPC port (localhost:50051)
//   --token     AVTOMATIKA_CLIENT_TOKEN   the x-client-token
//   --endpoint  AVTOMATIKA_ENDPOINT       the echo blueprint's endpoint (jobs/echo)
import { parseArgs } from "node:util";

import { create } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { JobStatus, type Job } from "./gen/avtomatika/v1/job_pb.js";
import { JobService, type StreamJobEventsResponse } from "./gen/avtomatika/v1/job_service_pb.js";
import { PayloadSchema, type Payload } from "./gen/avtomatika/v1/payload_pb.js";

type JobClient = Client<typeof JobService>;

const TERMINAL = new Set([
  JobStatus.FINISHED,
  JobStatus.FAILED,
  JobStatus.CANCELLED,
  JobStatus.ERROR,
  JobStatus.QUARANTINED,
]);

// The second job's task sleeps this long on a worker that honours `sleep_ms`
// (the echo skill of examples/node-worker does): long enough to be cancelled.
const LONG_TASK_MS = 60_000;

function settings(): { address: string; token: string; endpoint: string } {
  const { values } = parseArgs({
    options: {
      address: { type: "string" },
      token: { type: "string" },
      endpoint: { type: "string" },
    },
  });
  return {
    address: values.address ?? process.env.ORCHESTRATOR_GRPC ?? "localhost:50051",
    token: values.token ?? process.env.AVTOMATIKA_CLIENT_TOKEN ?? "",
    endpoint: values.endpoint ?? process.env.AVTOMATIKA_ENDPOINT ?? "jobs/echo",
  };
}

/** A job payload: JSON, the only encoding v1 defines. */
function jsonPayload(value: unknown): Payload {
  return create(PayloadSchema, {
    encoding: "json/plain",
    data: new TextEncoder().encode(JSON.stringify(value)),
  });
}

/** A status as the REST API spells it: JobStatus.WAITING_FOR_WORKER -> "waiting_for_worker". */
function statusName(status: JobStatus): string {
  return (JobStatus[status] ?? String(status)).toLowerCase();
}

async function createEchoJob(client: JobClient, endpoint: string, data: object): Promise<string> {
  const created = await client.createJob({
    apiVersion: "v1",
    endpoint,
    initialData: jsonPayload(data),
  });
  console.log(`created ${created.jobId}`);
  return created.jobId;
}

/**
 * Follows a job until a terminal status and returns that last event. The
 * stream opens with the job as it is, so a job that ended already is seen.
 * `onEvent` runs for every event before the next one is read.
 */
async function follow(
  client: JobClient,
  jobId: string,
  onEvent: (event: StreamJobEventsResponse) => Promise<void> = async () => {},
): Promise<StreamJobEventsResponse> {
  for await (const event of client.streamJobEvents({ jobId })) {
    console.log(`event ${jobId} ${statusName(event.status)} state=${event.currentState}`);
    await onEvent(event);
    if (TERMINAL.has(event.status)) {
      return event;
    }
  }
  throw new Error(`the event stream of ${jobId} ended before the job did`);
}

function expectStatus(event: StreamJobEventsResponse, wanted: JobStatus): void {
  if (event.status !== wanted) {
    const why = event.error ? `: ${event.error}` : "";
    throw new Error(`job ${event.jobId} ended ${statusName(event.status)}${why}, not ${statusName(wanted)}`);
  }
}

function describe(job: Job): string {
  return `${job.id} ${statusName(job.status)} blueprint=${job.blueprintName} state=${job.currentState}`;
}

async function main(): Promise<void> {
  const { address, token, endpoint } = settings();
  // Every call carries the client token as gRPC metadata.
  const authenticate: Interceptor = (next) => async (request) => {
    request.header.set("x-client-token", token);
    return next(request);
  };
  const transport = createGrpcTransport({ baseUrl: `http://${address}`, interceptors: [authenticate] });
  const client = createClient(JobService, transport);

  const finishedId = await createEchoJob(client, endpoint, { greeting: "hello from Node.js" });
  expectStatus(await follow(client, finishedId), JobStatus.FINISHED);
  console.log(`finished ${finishedId}`);

  const cancelledId = await createEchoJob(client, endpoint, { sleep_ms: LONG_TASK_MS });
  let cancelSent = false;
  const last = await follow(client, cancelledId, async (event) => {
    // Cancel once, when the task is queued or running: the same stream then
    // carries the job to its cancelled status.
    if (!cancelSent && event.status === JobStatus.WAITING_FOR_WORKER) {
      cancelSent = true;
      const answer = await client.cancelJob({ jobId: cancelledId });
      console.log(`cancel ${cancelledId}: ${answer.status}`);
    }
  });
  expectStatus(last, JobStatus.CANCELLED);
  console.log(`cancelled ${cancelledId}`);

  const { jobs } = await client.listJobs({ pageSize: 20 });
  console.log(`jobs (${jobs.length}, newest first):`);
  for (const job of jobs) {
    console.log(`  ${describe(job)}`);
  }
}

main().catch((error: unknown) => {
  if (error instanceof ConnectError) {
    // The orchestrator's machine-readable code travels in trailing metadata.
    const code = error.metadata.get("avtomatika-error-code");
    console.error(`error: ${error.message}${code ? ` (avtomatika-error-code: ${code})` : ""}`);
  } else {
    console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
  }
  process.exit(1);
});
