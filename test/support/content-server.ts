// Builds the test-only image of the content fixture server (test/fixtures/content-server) FROM toolcell/node, and removes it.
import {fileURLToPath} from 'node:url';
import {useTestImage} from './fixture-server.ts';

/** Folder of the content fixture server, its definitions and its Dockerfile. */
export const CONTENT_SERVER_DIR = fileURLToPath(new URL('../fixtures/content-server/', import.meta.url));
/** `toolcell-test/content-server:<pid>`, built and removed around the enclosing tests (fixture-server.ts `useTestImage`). */
export function useContentServerImage(): {tag: string; imageId: () => string} {
  return useTestImage('content-server', CONTENT_SERVER_DIR, ['Dockerfile', 'content-server.mjs', 'definitions.json']);
}
