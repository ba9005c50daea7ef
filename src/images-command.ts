// `toolcell images build`: builds the sandbox images and prints progress.
import {buildImages} from './backends/container/images.ts';
import {ToolcellError} from './errors.ts';

/**
 * `toolcell images build [NAME]`: builds the sandbox images from `sandboxes/` (base first, via
 * debootstrap and `docker import`, then the Dockerfile images FROM it), streaming progress
 * lines to stderr.
 * @returns exit code: 0 built, 1 a build failed, 2 unknown image name.
 */
export async function imagesBuild(name?: string): Promise<number> {
  try {
    await buildImages(name === undefined ? undefined : [name], (line) => process.stderr.write(`${line}\n`));
    process.stderr.write(`toolcell: images built${name ? ` (${name})` : ''}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`toolcell: images build failed: ${(err as Error).message}\n`);
    return err instanceof ToolcellError && err.code === 'INVALID_ARGUMENTS' ? 2 : 1;
  }
}
