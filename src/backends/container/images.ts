// The sandbox images and how `toolcell images build` builds them from sandboxes/ without a registry.
import {chmodSync, copyFileSync, cpSync, existsSync, mkdtempSync, readdirSync, rmSync} from 'node:fs';
import {createRequire} from 'node:module';
import {tmpdir} from 'node:os';
import {fileURLToPath} from 'node:url';
import {dirname, join, relative} from 'node:path';
import Docker from 'dockerode';
import {execa} from 'execa';
import {ToolcellError} from '../../errors.ts';

/**
 * The sandbox images built from `sandboxes/` (one folder per image):
 * - `toolcell/base`: Debian bookworm minbase made by debootstrap and `docker import`ed; no
 *   registry needed (`sandboxes/base/build.sh`, root and debootstrap required);
 * - `toolcell/python`, `toolcell/shell`: ordinary Dockerfiles `FROM ${BASE}` (default
 *   `toolcell/base`; pass `base: 'debian:bookworm-slim'` where a registry is reachable);
 * - `toolcell/node`: the same, with the Node 24 binary of this project's `node` npm dependency
 *   staged into the build context (never downloaded): hosted MCP servers from npm.
 */

/** Metadata of one sandbox image. */
export interface ImageSpec {
  /** Short name, the argument of `toolcell images build NAME`. */
  name: 'base' | 'python' | 'shell' | 'node';
  /** Image reference it is tagged with. */
  tag: string;
  /** Folder under `sandboxes/`. */
  dir: string;
  /** `rootfs`: built by `build.sh` (debootstrap + import); `dockerfile`: `docker build` of the folder. */
  kind: 'rootfs' | 'dockerfile';
  /** Image this one is built FROM by default. */
  from?: string;
  /** Files staged into a copy of the folder before the build: `node` = the Node binary ({@link nodeBinaryPath}) as `./node`. */
  stage?: 'node';
  description: string;
}

/** Every sandbox image, in build order. */
export const IMAGES: readonly ImageSpec[] = Object.freeze([
  {name: 'base', tag: 'toolcell/base', dir: 'base', kind: 'rootfs', description: 'Debian bookworm minbase (debootstrap), imported without a registry'},
  {name: 'python', tag: 'toolcell/python', dir: 'python', kind: 'dockerfile', from: 'toolcell/base', description: 'Python 3 (python3) for python__run'},
  {name: 'shell', tag: 'toolcell/shell', dir: 'shell', kind: 'dockerfile', from: 'toolcell/base', description: 'coreutils, grep, sed, jq, ripgrep for shell__run and json__query'},
  {name: 'node', tag: 'toolcell/node', dir: 'node', kind: 'dockerfile', from: 'toolcell/base', stage: 'node', description: 'Node.js 24 (from the node npm package) for hosted MCP servers'},
]);

/**
 * Absolute path of the Node binary shipped by this project's `node` npm dependency
 * (`node_modules/node/node_modules/node-<platform>-<arch>/bin/node`, else `node_modules/node/bin/node`).
 * Only linux binaries fit a container; on other hosts this finds nothing.
 * @throws ToolcellError `BACKEND_UNAVAILABLE` when the package or its binary is missing (run `npm ci`).
 */
export function nodeBinaryPath(): string {
  let root: string;
  try {
    root = dirname(createRequire(import.meta.url).resolve('node/package.json'));
  } catch (err) {
    throw new ToolcellError('BACKEND_UNAVAILABLE', 'Building image "toolcell/node" needs the "node" npm package (a dependency of toolcell): run npm ci.', {}, {cause: err});
  }
  for (const candidate of [join(root, 'node_modules', `node-linux-${process.arch}`, 'bin', 'node'), join(root, 'bin', 'node')]) {
    if (existsSync(candidate)) return candidate;
  }
  throw new ToolcellError('BACKEND_UNAVAILABLE', `Building image "toolcell/node" needs a linux-${process.arch} Node binary from the "node" npm package; none is installed.`);
}

/** The `sandboxes/` folder shipped with the package (`src/…` and `dist/…` are both three levels below the root). */
export const SANDBOXES_DIR = fileURLToPath(new URL('../../../sandboxes/', import.meta.url));

/** Options of {@link buildImages}. */
export interface BuildOptions {
  docker?: Docker;
  /** `BASE` build argument for the Dockerfile images; default `toolcell/base` (built first when missing). */
  base?: string;
  /** Folder holding the image folders; default {@link SANDBOXES_DIR}. */
  sandboxesDir?: string;
  /** Build without the layer cache. */
  noCache?: boolean;
  signal?: AbortSignal;
}

function filesUnder(dir: string): string[] {
  return (readdirSync(dir, {recursive: true, withFileTypes: true}) as Array<{isFile(): boolean; name: string; parentPath: string}>)
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)));
}

async function imageExists(docker: Docker, tag: string): Promise<boolean> {
  try {
    await docker.getImage(tag).inspect();
    return true;
  } catch {
    return false;
  }
}

/**
 * Builds sandbox images with progress lines (`onProgress`, one line at a time, prefixed with
 * the image name). `names` default: all, in {@link IMAGES} order. Asking for `python` or
 * `shell` with the default base also builds `toolcell/base` when it is missing.
 * `base` runs `sandboxes/base/build.sh` (needs root, debootstrap and a Debian mirror);
 * the others are built by the engine from their folder (Docker Engine API `POST /build`,
 * classic builder; `RUN apt-get` reaches Debian's mirrors over the default bridge).
 * @throws ToolcellError `INVALID_ARGUMENTS` for an unknown name; `BACKEND_UNAVAILABLE` when the
 *   engine is unreachable or a build fails (the message names the image and the failing step).
 */
export async function buildImages(names: string[] | undefined, onProgress: (line: string) => void = () => undefined, options: BuildOptions = {}): Promise<void> {
  const docker = options.docker ?? new Docker();
  const dir = options.sandboxesDir ?? SANDBOXES_DIR;
  const unknown = (names ?? []).filter((n) => !IMAGES.some((i) => i.name === n || i.tag === n));
  if (unknown.length > 0) {
    throw new ToolcellError('INVALID_ARGUMENTS', `Unknown image ${unknown.map((n) => `"${n}"`).join(', ')}. Known: ${IMAGES.map((i) => i.name).join(', ')}.`, {known: IMAGES.map((i) => i.name)});
  }
  const wanted = new Set(names && names.length > 0 ? IMAGES.filter((i) => names.includes(i.name) || names.includes(i.tag)).map((i) => i.name) : IMAGES.map((i) => i.name));
  const base = options.base ?? 'toolcell/base';
  if (base === 'toolcell/base' && !wanted.has('base') && [...wanted].some((n) => n !== 'base') && !(await imageExists(docker, 'toolcell/base'))) {
    onProgress('base: toolcell/base is missing; building it first');
    wanted.add('base');
  }
  for (const image of IMAGES) {
    if (!wanted.has(image.name)) continue;
    if (image.kind === 'rootfs') await buildRootfs(image, dir, onProgress, options.signal);
    else await buildDockerfile(docker, image, dir, base, onProgress, options);
  }
}

async function buildRootfs(image: ImageSpec, dir: string, onProgress: (line: string) => void, signal?: AbortSignal): Promise<void> {
  const script = join(dir, image.dir, 'build.sh');
  onProgress(`${image.name}: ${script} ${image.tag}`);
  const child = execa('bash', [script, image.tag], {all: true, buffer: false, reject: false, ...(signal ? {cancelSignal: signal} : {})});
  const tail: string[] = [];
  for await (const line of child.iterable({from: 'all'})) {
    const text = String(line);
    tail.push(text);
    if (tail.length > 20) tail.shift();
    onProgress(`${image.name}: ${text}`);
  }
  const result = await child;
  if (result.exitCode !== 0) {
    throw new ToolcellError('BACKEND_UNAVAILABLE', `Building image "${image.tag}" failed (sandboxes/${image.dir}/build.sh exit ${result.exitCode}).`, {image: image.tag},
      {cause: new Error(tail.join('\n'))});
  }
}

async function buildDockerfile(docker: Docker, image: ImageSpec, dir: string, base: string, onProgress: (line: string) => void, options: BuildOptions): Promise<void> {
  if (image.stage === undefined) return buildContext(docker, image, join(dir, image.dir), base, onProgress, options);
  // A staged build context: a private copy of the folder plus the staged files, removed after.
  const staging = mkdtempSync(join(tmpdir(), `toolcell-build-${image.name}-`));
  try {
    cpSync(join(dir, image.dir), staging, {recursive: true});
    const nodeBinary = nodeBinaryPath();
    onProgress(`${image.name}: staging ${nodeBinary} as ./node`);
    copyFileSync(nodeBinary, join(staging, 'node'));
    chmodSync(join(staging, 'node'), 0o755);
    await buildContext(docker, image, staging, base, onProgress, options);
  } finally {
    rmSync(staging, {recursive: true, force: true});
  }
}

async function buildContext(docker: Docker, image: ImageSpec, context: string, base: string, onProgress: (line: string) => void, options: BuildOptions): Promise<void> {
  onProgress(`${image.name}: docker build --build-arg BASE=${base} -t ${image.tag} sandboxes/${image.dir}`);
  let stream: NodeJS.ReadableStream;
  try {
    stream = await docker.buildImage({context, src: filesUnder(context)}, {
      t: image.tag,
      buildargs: {BASE: base},
      rm: true,
      forcerm: true,
      nocache: options.noCache === true,
      labels: {'toolcell.image': image.name},
      ...(options.signal ? {abortSignal: options.signal} : {}),
    });
  } catch (err) {
    throw new ToolcellError('BACKEND_UNAVAILABLE', `Building image "${image.tag}" failed: the Docker engine did not accept the build.`, {image: image.tag}, {cause: err});
  }
  let failure: string | undefined;
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err) => (err ? reject(err) : resolve()), (event: {stream?: string; status?: string; error?: string; errorDetail?: {message?: string}}) => {
      if (event.error || event.errorDetail) failure = event.errorDetail?.message ?? event.error;
      const text = event.stream ?? event.status ?? event.error;
      if (text) for (const line of text.split('\n')) if (line.trim()) onProgress(`${image.name}: ${line.trimEnd()}`);
    });
  }).catch((err: unknown) => {
    failure ??= (err as Error).message;
  });
  if (failure !== undefined) {
    throw new ToolcellError('BACKEND_UNAVAILABLE', `Building image "${image.tag}" failed: ${failure.split('\n')[0]!.slice(0, 300)}`, {image: image.tag});
  }
}
