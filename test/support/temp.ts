import {mkdtemp, mkdir, rm, writeFile} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {dirname, join} from 'node:path';

/** A temporary directory removed by `dispose()`; files are written relative to it. */
export async function tempDir(prefix = 'toolcell-test-'): Promise<{path: string; write: (rel: string, content: string | object) => Promise<string>; dispose: () => Promise<void>}> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return {
    path,
    write: async (rel, content) => {
      const file = join(path, rel);
      await mkdir(dirname(file), {recursive: true});
      await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
      return file;
    },
    dispose: () => rm(path, {recursive: true, force: true}),
  };
}
