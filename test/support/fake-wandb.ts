// A fake Weights & Biases on 127.0.0.1 that records every request and refuses any that W&B would
// not take. What W&B accepts is written down from its own client (github.com/wandb/wandb:
// sdk/internal/internal_api.py for GraphQL, sdk/internal/file_stream.py for the file stream):
// - every request: POST, JSON, HTTP Basic auth with user `api` and the API key as password;
// - POST /graphql: {query, variables?, operationName?}, run by graphql-js against the part of
//   W&B's schema the client uses (so an unknown operation, field or input field, or a variable
//   missing or of the wrong type, is an error), the answer holding only the fields asked for;
// - POST /files/{entity}/{project}/{run}/file_stream, for a run upserted before: a JSON body of
//   `files` ({name: {offset, content: [lines]}}: history as JSON-line rows with _step, _runtime
//   and _timestamp; the summary as one JSON line at offset 0), or a heartbeat
//   {complete: false, failed: false}, or the end {complete: true, exitcode}; the client may add
//   `dropped` and `uploaded` (and `preempting`) to any of them.
// A refused request is answered 400 (401 for a wrong key) and listed in `refused`: tests assert
// that list is empty, so a wrong field fails them.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { buildSchema, graphql, type GraphQLScalarType } from 'graphql';

export const FAKE_WANDB_API_KEY = 'local-0123456789abcdef0123456789abcdef01234567';

/** The operations of W&B's API that a run logger uses, with the types W&B gives them. */
const WANDB_SCHEMA = buildSchema(`
  scalar JSONString

  type Query {
    viewer: User
  }

  type Mutation {
    upsertBucket(input: UpsertBucketInput!): UpsertBucketPayload
  }

  input UpsertBucketInput {
    id: String
    name: String
    groupName: String
    modelName: String
    entityName: String
    description: String
    displayName: String
    notes: String
    config: JSONString
    commit: String
    host: String
    debug: Boolean
    jobProgram: String
    jobRepo: String
    jobType: String
    state: String
    sweep: String
    tags: [String!]
    summaryMetrics: JSONString
  }

  type UpsertBucketPayload {
    bucket: Run
    inserted: Boolean
  }

  type Run {
    id: ID!
    name: String!
    displayName: String
    description: String
    config: JSONString
    sweepName: String
    historyLineCount: Int
    project: Project
  }

  type Project {
    id: ID!
    name: String!
    entity: Entity!
  }

  type Entity {
    id: ID!
    name: String!
  }

  type User {
    id: ID!
    entity: String
    username: String
  }
`);

/** JSONString holds a JSON document as a string: anything else is a type error, as on W&B. */
Object.assign(WANDB_SCHEMA.getType('JSONString') as GraphQLScalarType, {
  parseValue(value: unknown) {
    if (typeof value !== 'string') throw new TypeError(`JSONString must be a string, got ${JSON.stringify(value)}`);
    JSON.parse(value);
    return value;
  },
});

const ajv = new Ajv2020({ allErrors: true, strict: true });
const count = { type: 'integer', minimum: 0 };
const fileChunk = {
  type: 'object',
  required: ['offset', 'content'],
  additionalProperties: false,
  properties: { offset: count, content: { type: 'array', items: { type: 'string' } } },
};
const optional = { dropped: count, uploaded: { type: 'array', items: { type: 'string' } } };
/** The three kinds of file_stream body the client sends. */
const validateFileStreamBody = ajv.compile({
  oneOf: [
    {
      type: 'object',
      required: ['files'],
      additionalProperties: false,
      properties: { files: { type: 'object', minProperties: 1, additionalProperties: fileChunk }, ...optional },
    },
    {
      type: 'object',
      required: ['complete', 'failed'],
      additionalProperties: false,
      properties: { complete: { const: false }, failed: { const: false }, preempting: { type: 'boolean' }, ...optional },
    },
    {
      type: 'object',
      required: ['complete', 'exitcode'],
      additionalProperties: false,
      properties: { complete: { const: true }, exitcode: { type: 'integer' }, ...optional },
    },
  ],
});
/** A row of wandb-history.jsonl: the client's bookkeeping keys, then the logged values. */
const validateHistoryRow = ajv.compile({
  type: 'object',
  required: ['_step', '_runtime', '_timestamp'],
  properties: { _step: count, _runtime: { type: 'number', minimum: 0 }, _timestamp: { type: 'number', minimum: 0 } },
});
/** W&B keeps a run's config as {key: {value, desc?}}. */
const validateConfig = ajv.compile({
  type: 'object',
  additionalProperties: { type: 'object', required: ['value'], additionalProperties: false, properties: { value: true, desc: { type: ['string', 'null'] } } },
});

export interface Recorded {
  method: string;
  path: string;
  authorization: string | undefined;
  body: any;
}

export interface FakeWandbBehaviour {
  /** Entity W&B answers when the request names none (the key's default entity). */
  defaultEntity?: string;
  historyLineCount?: number;
  /** Statuses for the next file_stream requests, then 200. */
  fileStreamStatuses?: number[];
  /** Answer the GraphQL request with this status / with GraphQL errors. */
  graphqlStatus?: number;
  graphqlErrors?: boolean;
  /** Delay before answering the GraphQL request. */
  graphqlDelayMs?: number;
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function refuseUnless(condition: unknown, message: string, status = 400): asserts condition {
  if (!condition) throw new Refusal(status, message);
}

const ajvErrors = (errors: unknown) => JSON.stringify(errors).slice(0, 600);

export async function startFakeWandb(behaviour: FakeWandbBehaviour = {}) {
  const requests: Recorded[] = [];
  const refused: string[] = [];
  /** Runs upserted so far, as `entity/project/name`. */
  const runs = new Set<string>();
  const fileStreamStatuses = [...(behaviour.fileStreamStatuses ?? [])];
  const expectedAuthorization = `Basic ${Buffer.from(`api:${FAKE_WANDB_API_KEY}`).toString('base64')}`;

  const rootValue = {
    upsertBucket: ({ input }: { input: Record<string, any> }) => {
      if (input.config != null) refuseUnless(validateConfig(JSON.parse(input.config)), `config is not {key: {value}}: ${ajvErrors(validateConfig.errors)}`);
      for (const tag of input.tags ?? []) refuseUnless(tag.length >= 1 && tag.length <= 64, `tag '${tag}' must be between 1 and 64 characters`);
      refuseUnless(typeof input.name === 'string' && input.name, 'upsertBucket without a run name');
      refuseUnless(typeof input.modelName === 'string' && input.modelName, 'upsertBucket without a project (modelName)');
      const entity = input.entityName ?? behaviour.defaultEntity ?? 'default-entity';
      runs.add(`${entity}/${input.modelName}/${input.name}`);
      return {
        bucket: {
          id: 'UnVuOjE=',
          name: input.name,
          displayName: input.displayName ?? input.name,
          config: input.config ?? '{}',
          historyLineCount: behaviour.historyLineCount ?? 0,
          project: { id: 'UHJvamVjdDox', name: input.modelName, entity: { id: 'RW50aXR5OjE=', name: entity } },
        },
        inserted: true,
      };
    },
  };

  async function answerGraphql(body: any): Promise<[number, unknown]> {
    refuseUnless(body && typeof body === 'object' && !Array.isArray(body), 'GraphQL request body must be a JSON object');
    const unknown = Object.keys(body).filter((k) => !['query', 'variables', 'operationName'].includes(k));
    refuseUnless(unknown.length === 0, `unknown keys in a GraphQL request: ${unknown}`);
    refuseUnless(typeof body.query === 'string', 'GraphQL request without a query');
    refuseUnless(body.variables === undefined || (typeof body.variables === 'object' && !Array.isArray(body.variables)), 'variables must be an object');
    if (behaviour.graphqlDelayMs) await new Promise((resolve) => setTimeout(resolve, behaviour.graphqlDelayMs));
    if (behaviour.graphqlStatus) return [behaviour.graphqlStatus, { errors: [{ message: 'nope' }] }];
    if (behaviour.graphqlErrors) return [200, { errors: [{ message: 'permission denied' }], data: { upsertBucket: null } }];
    const result = await graphql({ schema: WANDB_SCHEMA, source: body.query, variableValues: body.variables, operationName: body.operationName, rootValue });
    const refusal = result.errors?.map((e) => e.originalError).find((e) => e instanceof Refusal);
    if (refusal) throw refusal;
    refuseUnless(!result.errors?.length, `GraphQL errors: ${result.errors?.map((e) => e.message).join('; ')}`);
    return [200, result];
  }

  function answerFileStream(path: string, body: any): [number, unknown] {
    const [entity, project, run] = path.split('/').slice(2, 5).map(decodeURIComponent);
    refuseUnless(runs.has(`${entity}/${project}/${run}`), `file_stream for ${entity}/${project}/${run}, a run never upserted`, 404);
    refuseUnless(validateFileStreamBody(body), `not a file_stream body: ${ajvErrors(validateFileStreamBody.errors)}`);
    for (const [name, chunk] of Object.entries<{ offset: number; content: string[] }>(body.files ?? {})) {
      refuseUnless(['wandb-history.jsonl', 'wandb-summary.json', 'wandb-events.jsonl', 'output.log'].includes(name), `unknown file ${name}`);
      const rows = chunk.content.map((line) => {
        try {
          return JSON.parse(line);
        } catch {
          throw new Refusal(400, `${name}: a line that is not JSON: ${line.slice(0, 100)}`);
        }
      });
      if (name === 'wandb-history.jsonl') {
        for (const row of rows) refuseUnless(validateHistoryRow(row), `history row ${JSON.stringify(row)}: ${ajvErrors(validateHistoryRow.errors)}`);
      }
      if (name === 'wandb-summary.json') {
        refuseUnless(chunk.offset === 0 && rows.length === 1, 'the summary is one line at offset 0');
        refuseUnless(rows[0] && typeof rows[0] === 'object' && !Array.isArray(rows[0]), 'the summary is a JSON object');
      }
    }
    const status = fileStreamStatuses.shift() ?? 200;
    return status === 200 ? [200, { exitcode: null, limits: {} }] : [status, { error: 'unavailable' }];
  }

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown = undefined;
      try {
        body = JSON.parse(text);
      } catch {
        /* refused below */
      }
      requests.push({ method: req.method!, path: req.url!, authorization: req.headers.authorization, body });
      let answer: [number, unknown];
      try {
        refuseUnless(req.headers.authorization === expectedAuthorization, `authorization ${req.headers.authorization} is not Basic api:<key>`, 401);
        refuseUnless(req.method === 'POST', `${req.method} instead of POST`);
        refuseUnless(/^application\/json\b/.test(req.headers['content-type'] ?? ''), `content-type ${req.headers['content-type']}`);
        refuseUnless(body !== undefined, `a body that is not JSON: ${text.slice(0, 100)}`);
        if (req.url === '/graphql') answer = await answerGraphql(body);
        else if (/^\/files\/[^/]+\/[^/]+\/[^/]+\/file_stream$/.test(req.url!)) answer = answerFileStream(req.url!, body);
        else throw new Refusal(404, `no such endpoint ${req.url}`);
      } catch (err) {
        const refusal = err instanceof Refusal ? err : new Refusal(400, String(err));
        refused.push(`${req.method} ${req.url}: ${refusal.message}`);
        answer = [refusal.status, { error: refusal.message }];
      }
      res.writeHead(answer[0], { 'content-type': 'application/json' }).end(JSON.stringify(answer[1]));
    });
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const fileStreams = () => requests.filter((r) => r.path.endsWith('/file_stream'));
  return {
    baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    apiKey: FAKE_WANDB_API_KEY,
    requests,
    /** Why each refused request was refused; empty when everything sent was what W&B takes. */
    refused,
    fileStreams,
    /** History rows sent for run `runId`, parsed, in order. */
    history: (runId: string): Record<string, unknown>[] =>
      fileStreams()
        .filter((r) => r.path.endsWith(`/${runId}/file_stream`) && r.body?.files?.['wandb-history.jsonl'])
        .flatMap((r) => r.body.files['wandb-history.jsonl'].content.map((line: string) => JSON.parse(line))),
    /** The body that ended run `runId`, if any. */
    finished: (runId: string) => fileStreams().find((r) => r.path.endsWith(`/${runId}/file_stream`) && r.body?.complete === true)?.body,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export type FakeWandb = Awaited<ReturnType<typeof startFakeWandb>>;
