// A blob store that behaves as one on another machine: it keeps its blobs in a local FsBlobStore
// but is not one, so nothing hands out that store's own paths. Code meant for S3 (pushing a job's
// files, pulling them through the blob cache) runs for real against it; `downloads` counts pulls.
import type { Readable } from 'node:stream';
import type { BlobStore } from '../../src/store/index.ts';
import type { FsBlobStore } from '../../src/store/blobs.ts';

export class RemoteLikeBlobStore implements BlobStore {
  downloads = 0;

  constructor(private readonly inner: FsBlobStore) {}

  put(key: string, source: Readable | AsyncIterable<Buffer>, options?: { maxBytes?: number }) {
    return this.inner.put(key, source, options);
  }
  concat(key: string, partKeys: string[]) {
    return this.inner.concat(key, partKeys);
  }
  read(key: string) {
    return this.inner.read(key);
  }
  download(key: string, file: string) {
    this.downloads++;
    return this.inner.download(key, file);
  }
  size(key: string) {
    return this.inner.size(key);
  }
  list(prefix: string) {
    return this.inner.list(prefix);
  }
  remove(key: string) {
    return this.inner.remove(key);
  }
  removePrefix(prefix: string) {
    return this.inner.removePrefix(prefix);
  }
}
