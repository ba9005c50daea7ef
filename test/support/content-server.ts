// Builds the test-only image of the content fixture server (test/fixtures/content-server) FROM toolcell/node, and removes it.
import {after, before} from 'node:test';
import {fileURLToPath} from 'node:url';
import {docker} from './docker.ts';

/** Folder of the content fixture server, its definitions and its Dockerfile. */
export const CONTENT_SERVER_DIR = fileURLToPath(new URL('../fixtures/content-server/', import.meta.url));
/** Longest wait for the image build, in ms (two COPY/RUN steps on a busy host). */
const BUILD_TIMEOUT_MS = 120_000;

/**
 * Builds `toolcell-test/content-server:<pid>` in `before` (deadline {@link BUILD_TIMEOUT_MS}) and
 * removes it in `after`; returns its tag and a getter of its image ID (valid inside tests).
 */
export function useContentServerImage(): {tag: string; imageId: () => string} {
  const tag = `toolcell-test/content-server:${process.pid}`;
  let id: string | undefined;
  before(async () => {
    const stream = await docker.buildImage({context: CONTENT_SERVER_DIR, src: ['Dockerfile', 'content-server.mjs', 'definitions.json']},
      {t: tag, rm: true, forcerm: true, labels: {'toolcell.test': 'content-server'}, abortSignal: AbortSignal.timeout(BUILD_TIMEOUT_MS)} as object);
    let failure: string | undefined;
    await new Promise<void>((resolve, reject) => docker.modem.followProgress(stream, (err) => (err ? reject(err) : resolve()),
      (e: {error?: string}) => { if (e.error) failure = e.error; }));
    if (failure) throw new Error(`building ${tag} failed: ${failure}`);
    id = (await docker.getImage(tag).inspect()).Id;
  }, {timeout: BUILD_TIMEOUT_MS + 5_000});
  after(async () => {
    await docker.getImage(tag).remove({force: true}).catch(() => undefined);
  });
  return {tag, imageId: () => {
    if (id === undefined) throw new Error('the content server image is built in before()');
    return id;
  }};
}
