// `tuneforge worker` for tests of hosts with no shared disk: the worker main.ts builds, on its own
// DATA_DIR and the shared database, whose blob store is the folder SHARED_BLOBS seen as a store on
// another machine (RemoteLikeBlobStore): what a job needs is pulled through this host's blob cache
// and what it writes is pushed, as with S3. Prints `worker started` (spawnCli's signal) when up.
import { loadConfig } from '../../src/config.ts';
import { defaultJobRunner } from '../../src/cli/main.ts';
import { Worker } from '../../src/scheduler/worker.ts';
import { FsBlobStore } from '../../src/store/blobs.ts';
import { openStore } from '../../src/store/index.ts';
import { RemoteLikeBlobStore } from './remote-blobs.ts';

const config = loadConfig();
const shared = process.env.SHARED_BLOBS;
if (!shared) throw new Error('SHARED_BLOBS names the shared blob folder');
const store = await openStore(config, { blobs: new RemoteLikeBlobStore(new FsBlobStore(shared)) });
const worker = new Worker({
  store,
  runJob: defaultJobRunner(config),
  dataDir: config.dataDir,
  leaseMs: config.queue.leaseMs,
  heartbeatMs: config.queue.heartbeatMs,
  pollMs: config.queue.pollMs,
});
worker.start();
console.log(JSON.stringify({ msg: 'worker started', id: worker.id, dataDir: config.dataDir }));
process.on('SIGTERM', () => void worker.stop().then(() => store.close()).then(() => process.exit(0)));
