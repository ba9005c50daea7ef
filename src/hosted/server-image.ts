// Builds (or, for oci:, tags) the image a hosted MCP server runs from: exactly the resolved artifact, installed without a shell ever seeing operator input.
import {copyFileSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {dirname, join, posix} from 'node:path';
import Docker from 'dockerode';
import {ToolcellError} from '../errors.ts';
import {listDirFiles, treeSha256, type ResolvedSource} from './resolve-source.ts';

/** Where the server's files live inside its image. */
export const SERVER_ROOT = '/opt/toolcell/server';

/** Options of the image build. */
export interface ServerImageOptions {
  /** Package name (`toolcell add --name`): the image is `toolcell/srv-<name>:<version>`. */
  name: string;
  /** The source as written to `server.source` (a label on the image). */
  source: string;
  /** `npm:`: run the package's install scripts (`npm ci` without `--ignore-scripts`), in the build container, with network. */
  allowInstallScripts?: boolean;
  /** `dir:`: which runtime image the folder is copied into; default `node`. */
  runtime?: 'node' | 'python';
  /** PEM text of extra CA certificates the build must trust (npm behind a TLS-intercepting proxy); default {@link hostExtraCaCerts}. */
  extraCaCerts?: string;
  /** The npm CLI folder copied into the install stage; default {@link hostNpmDir}. */
  npmDir?: string;
  /** Base images; defaults `toolcell/node` and `toolcell/python` (`toolcell images build node|python`). */
  nodeImage?: string;
  pythonImage?: string;
  docker?: Docker;
  /** Deadline of the whole build (ms); default 900 000. */
  timeoutMs?: number;
  onProgress?: (line: string) => void;
}

/** What a build produced: the tag and the engine's image ID (to pin). */
export interface ServerImage {
  image: string;
  imageId: string;
}

/** A Docker build context: the Dockerfile text and the other files, relative path → content or a host file to copy. */
export interface BuildContext {
  dockerfile: string;
  files: Map<string, {text: string} | {copyFrom: string} | {copyDir: string}>;
}

/**
 * The folder of the npm CLI on this host (the `npm` on PATH, followed to its package), which the
 * install stage runs under the image's Node 24: the same npm that resolved the version, without
 * adding Debian's npm and its ~380 packages to every build.
 * @throws ToolcellError `BACKEND_UNAVAILABLE` when no npm is on PATH.
 */
export function hostNpmDir(env: NodeJS.ProcessEnv = process.env): string {
  for (const dir of (env.PATH ?? '').split(':')) {
    if (!dir) continue;
    const candidate = join(dir, 'npm');
    if (!existsSync(candidate)) continue;
    const cli = realpathSync(candidate);
    const pkg = dirname(dirname(cli));
    if (existsSync(join(pkg, 'bin', 'npm-cli.js')) && existsSync(join(pkg, 'package.json'))) return pkg;
  }
  throw new ToolcellError('BACKEND_UNAVAILABLE', 'npm: sources need the npm CLI on PATH (it resolves the version and installs it in the image build).');
}

/** Docker tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`; other characters (`+`, `!`) become `_`. */
export function imageTag(name: string, version: string): string {
  const tag = version.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[.-]/, '_').slice(0, 128);
  return `toolcell/srv-${name}:${tag}`;
}

/**
 * The extra CA certificates of this host, as PEM text, for builds that reach a registry through a
 * TLS-intercepting proxy (as the service Dockerfile's EXTRA_CA_CERTS): the file named by
 * `TOOLCELL_BUILD_CA_CERTS`, else every `*.crt` under /usr/local/share/ca-certificates (Debian's
 * place for local CAs, update-ca-certificates(8)). Empty when there are none. CA certificates are
 * public; they are used in the install stage only and are not in the final image.
 */
export function hostExtraCaCerts(env: NodeJS.ProcessEnv = process.env): string {
  const file = env.TOOLCELL_BUILD_CA_CERTS;
  if (file) return readFileSync(file, 'utf8');
  const dir = '/usr/local/share/ca-certificates';
  if (!existsSync(dir)) return '';
  return (readdirSync(dir, {recursive: true}) as string[])
    .filter((f) => f.endsWith('.crt'))
    .sort()
    .map((f) => readFileSync(join(dir, f), 'utf8').trim())
    .join('\n');
}

const APT_CLEAN = 'rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb';

/** Checks, inside the install stage, that npm installed exactly the pinned version and integrity (lockfile v2/v3 `packages`). */
const VERIFY_NPM = `// Run by the image build: the installed package must be exactly the one toolcell resolved.
const fs = require('node:fs');
const pin = JSON.parse(fs.readFileSync('pin.json', 'utf8'));
const lock = JSON.parse(fs.readFileSync('package-lock.json', 'utf8'));
const entry = (lock.packages || {})['node_modules/' + pin.name];
const installed = JSON.parse(fs.readFileSync('node_modules/' + pin.name + '/package.json', 'utf8'));
const fail = (why) => { process.stderr.write('toolcell: ' + why + '\\n'); process.exit(1); };
if (!entry) fail(pin.name + ' is not in package-lock.json');
if (entry.version !== pin.version) fail('lockfile has ' + entry.version + ', expected ' + pin.version);
if (entry.integrity !== pin.integrity) fail('lockfile integrity ' + entry.integrity + ' differs from the resolved ' + pin.integrity);
if (installed.version !== pin.version) fail('installed ' + installed.version + ', expected ' + pin.version);
if (!fs.statSync('node_modules/' + pin.name + '/' + pin.bin).isFile()) fail('bin ' + pin.bin + ' is missing');
process.stderr.write('toolcell: installed ' + pin.name + '@' + pin.version + ' ' + pin.integrity + '\\n');
`;

/**
 * The build context for a resolved source (pure but for `dir:`, whose file list is read).
 * Operator input (package names, versions, paths) reaches the build only as files (package.json,
 * pin.json, requirements.txt) and as labels set through the API, never in the Dockerfile, so
 * neither a shell nor Dockerfile variable substitution parses it.
 * - npm: an install stage FROM toolcell/node runs this host's npm CLI ({@link hostNpmDir}) under
 *   the image's Node 24, trusting the host's extra CAs (EXTRA_CA_CERTS), writes a lockfile for the one
 *   exact version (`npm install --package-lock-only`), installs it with `npm ci --omit=dev`
 *   (`--ignore-scripts` unless allowed) and checks version and integrity against the pin; the
 *   final stage FROM toolcell/node gets only /opt/toolcell/server (package.json, the lockfile,
 *   node_modules), root-owned. npm runs as uid 65534 in the install stage, never as root.
 * - pypi file: an install stage FROM toolcell/python adds Debian's pip and setuptools and runs
 *   `pip install --no-index --no-deps --require-hashes --no-build-isolation --target
 *   /opt/toolcell/server/lib` of that one file, hash-checked; dependencies are not installed
 *   (a server must be self-contained, or vendor what it needs); pip runs as uid 65534. The final
 *   stage sets PYTHONPATH.
 * - pypi from an index (`--index-url`): the same install stage, trusting the host's extra CAs,
 *   with `pip install --no-deps --require-hashes` of `<project>==<version>` from that index (a
 *   requirements file holding `--index-url` and the SHA-256 the index stated at resolution), so
 *   any other file than the one resolved is refused by pip.
 * - dir: the folder's files copied to /opt/toolcell/server, root-owned, readable, not writable.
 */
export function buildContext(resolved: ResolvedSource, options: Pick<ServerImageOptions, 'name' | 'source' | 'allowInstallScripts' | 'runtime' | 'nodeImage' | 'pythonImage' | 'npmDir'> & {bin?: string}): BuildContext {
  const nodeImage = options.nodeImage ?? 'toolcell/node';
  const pythonImage = options.pythonImage ?? 'toolcell/python';
  const files: BuildContext['files'] = new Map();
  switch (resolved.type) {
    case 'npm': {
      files.set('package.json', {text: `${JSON.stringify({name: 'toolcell-hosted-server', private: true, dependencies: {[resolved.name]: resolved.version}}, null, 2)}\n`});
      files.set('pin.json', {text: `${JSON.stringify({name: resolved.name, version: resolved.version, integrity: resolved.integrity, bin: options.bin ?? '.'})}\n`});
      files.set('verify.cjs', {text: VERIFY_NPM});
      const scripts = options.allowInstallScripts ? '' : ' --ignore-scripts';
      files.set('npm', {copyDir: options.npmDir ?? hostNpmDir()});
      return {files, dockerfile: [
        '# Generated by `toolcell add` (src/hosted/server-image.ts).',
        `ARG NODE_IMAGE=${nodeImage}`,
        'FROM ${NODE_IMAGE} AS install',
        'USER root',
        'ARG EXTRA_CA_CERTS=""',
        'RUN if [ -n "$EXTRA_CA_CERTS" ]; then printf \'%s\\n\' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/build-extra.crt && update-ca-certificates; fi',
        'ENV npm_config_cafile=/etc/ssl/certs/ca-certificates.crt npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false',
        'COPY npm /opt/toolcell/npm',
        `RUN install -d -o 65534 -g 65534 ${SERVER_ROOT}`,
        `WORKDIR ${SERVER_ROOT}`,
        'COPY package.json pin.json verify.cjs ./',
        '# npm (and install scripts, when allowed) run as nobody, not as the build container\'s root.',
        'USER 65534:65534',
        'ENV HOME=/tmp',
        `RUN node /opt/toolcell/npm/bin/npm-cli.js install --package-lock-only --ignore-scripts \\`,
        ` && node /opt/toolcell/npm/bin/npm-cli.js ci --omit=dev${scripts} \\`,
        ' && node verify.cjs \\',
        ' && rm -f verify.cjs && rm -rf /tmp/.npm',
        'FROM ${NODE_IMAGE}',
        `COPY --from=install ${SERVER_ROOT} ${SERVER_ROOT}`,
        'USER 65534:65534',
        '',
      ].join('\n')};
    }
    case 'pypi-file': {
      files.set(`dist/${resolved.fileName}`, {copyFrom: resolved.path});
      files.set('requirements.txt', {text: `./dist/${resolved.fileName} --hash=sha256:${resolved.sha256}\n`});
      return {files, dockerfile: pipDockerfile(pythonImage, 'file')};
    }
    case 'pypi-index': {
      // Operator input reaches pip only as requirements-file lines (checked URL, PEP 503 name, PEP 440 version, hex hash).
      files.set('requirements.txt', {text: `--index-url ${resolved.indexUrl}\n${resolved.project}==${resolved.version} --hash=sha256:${resolved.sha256}\n`});
      return {files, dockerfile: pipDockerfile(pythonImage, 'index')};
    }
    case 'dir': {
      for (const rel of listDirFiles(resolved.path)) files.set(posix.join('server', rel), {copyFrom: join(resolved.path, rel)});
      const base = options.runtime === 'python' ? pythonImage : nodeImage;
      return {files, dockerfile: [
        '# Generated by `toolcell add` (src/hosted/server-image.ts).',
        `ARG BASE_IMAGE=${base}`,
        'FROM ${BASE_IMAGE}',
        'USER root',
        `COPY server ${SERVER_ROOT}`,
        `RUN chown -R 0:0 ${SERVER_ROOT} && chmod -R a+rX,go-w ${SERVER_ROOT}`,
        `WORKDIR ${SERVER_ROOT}`,
        'USER 65534:65534',
        '',
      ].join('\n')};
    }
    case 'oci':
      throw new Error('oci: sources are tagged, not built');
  }
}

/** The command of an npm source: `node` and the absolute path of its bin script (the one bin, or the one named by `--command`). */
export function npmCommand(resolved: Extract<ResolvedSource, {type: 'npm'}>, binName?: string): {command: string[]; bin: string} {
  const bins = Object.entries(resolved.bin);
  const chosen = binName === undefined ? (bins.length === 1 ? bins[0] : undefined) : bins.find(([n]) => n === binName);
  if (!chosen) {
    const names = bins.map(([n]) => n);
    throw new ToolcellError('INVALID_ARGUMENTS', binName === undefined
      ? `npm:${resolved.name}@${resolved.version} has ${names.length === 0 ? 'no bin' : `${names.length} bins (${names.join(', ')})`}; name one with --command`
      : `npm:${resolved.name}@${resolved.version} has no bin "${binName}"; it has: ${names.join(', ') || 'none'}`, {bins: names});
  }
  return {command: ['node', posix.join(SERVER_ROOT, 'node_modules', resolved.name, chosen[1])], bin: chosen[1]};
}

/**
 * Builds the image of a resolved `npm:`, `pypi:` file or `dir:` source, tagged
 * {@link imageTag} and labelled (`toolcell.hosted`, `toolcell.source`, `toolcell.version`,
 * `toolcell.integrity`), or tags an `oci:` source's image ID the same way (no build).
 * Progress lines go to `onProgress`. Runs the engine's classic builder; the install stage has
 * the default bridge network (to reach npm's registry and Debian's mirrors); install scripts,
 * when allowed, run there, not on the host.
 * Does NOT guarantee: that the npm package's dependencies are the same on a later rebuild (the
 * lockfile is made at build time; the pinned top-level package is checked, the tree is whatever
 * npm resolved then; the image ID pins the result).
 * @throws ToolcellError `BACKEND_UNAVAILABLE` when the engine is unreachable or the build fails
 *   (the message names the failing step's first line), `TIMEOUT` past `timeoutMs`.
 */
export async function buildServerImage(resolved: ResolvedSource, options: ServerImageOptions & {bin?: string}): Promise<ServerImage> {
  const docker = options.docker ?? new Docker();
  const tag = imageTag(options.name, resolved.version);
  const [repo, version] = [tag.slice(0, tag.lastIndexOf(':')), tag.slice(tag.lastIndexOf(':') + 1)];
  const progress = options.onProgress ?? (() => undefined);
  if (resolved.type === 'oci') {
    progress(`tagging ${resolved.imageId.slice(0, 19)} as ${tag}`);
    try {
      await docker.getImage(resolved.imageId).tag({repo, tag: version});
    } catch (err) {
      throw new ToolcellError('BACKEND_UNAVAILABLE', `Tagging the image as ${tag} failed.`, {image: tag}, {cause: err});
    }
    return {image: tag, imageId: resolved.imageId};
  }
  const context = buildContext(resolved, options);
  const dir = mkdtempSync(join(tmpdir(), 'toolcell-srv-build-'));
  const signal = AbortSignal.timeout(options.timeoutMs ?? 900_000);
  try {
    writeFileSync(join(dir, 'Dockerfile'), context.dockerfile);
    for (const [rel, file] of context.files) {
      const target = join(dir, rel);
      mkdirSync(dirname(target), {recursive: true});
      if ('text' in file) writeFileSync(target, file.text);
      else if ('copyFrom' in file) copyFileSync(file.copyFrom, target);
      else cpSync(file.copyDir, target, {recursive: true, dereference: false, verbatimSymlinks: true});
    }
    if (resolved.type === 'dir') {
      // What is sent must be what was resolved: a file changed, or a link swapped to point outside, since then is refused.
      const sent = [...context.files.keys()].filter((f) => f.startsWith('server/')).map((f) => f.slice('server/'.length));
      if (`sha256-${treeSha256(join(dir, 'server'), sent)}` !== resolved.integrity) {
        throw new ToolcellError('INVALID_ARGUMENTS', `dir:${resolved.path} changed while it was being added (its files no longer match ${resolved.integrity.slice(0, 19)}…); try again.`);
      }
    }
    const src = (readdirSync(dir, {recursive: true}) as string[]).filter((f) => !lstatSync(join(dir, f)).isDirectory());
    progress(`building ${tag} from ${options.source}`);
    const buildargs: Record<string, string> = {};
    if (resolved.type === 'npm' || resolved.type === 'pypi-index') buildargs.EXTRA_CA_CERTS = options.extraCaCerts ?? hostExtraCaCerts();
    let stream: NodeJS.ReadableStream;
    try {
      stream = await docker.buildImage({context: dir, src}, {t: tag, buildargs, rm: true, forcerm: true, abortSignal: signal,
        labels: {'toolcell.hosted': options.name, 'toolcell.source': options.source, 'toolcell.version': resolved.version, 'toolcell.integrity': resolved.integrity}});
    } catch (err) {
      throw new ToolcellError('BACKEND_UNAVAILABLE', `Building ${tag} failed: the Docker engine did not accept the build.`, {image: tag}, {cause: err});
    }
    let failure: string | undefined;
    await new Promise<void>((resolvePromise, reject) => {
      docker.modem.followProgress(stream, (err) => (err ? reject(err) : resolvePromise()), (event: {stream?: string; status?: string; error?: string; errorDetail?: {message?: string}}) => {
        if (event.error || event.errorDetail) failure = event.errorDetail?.message ?? event.error;
        const text = event.stream ?? event.status ?? event.error;
        if (text) for (const line of text.split('\n')) if (line.trim()) progress(line.trimEnd());
      });
    }).catch((err: unknown) => {
      failure ??= (err as Error).message;
    });
    if (signal.aborted) throw new ToolcellError('TIMEOUT', `Building ${tag} took longer than ${(options.timeoutMs ?? 900_000) / 1000} s.`, {image: tag});
    if (failure !== undefined) throw new ToolcellError('BACKEND_UNAVAILABLE', `Building ${tag} failed: ${failure.split('\n')[0]!.slice(0, 300)}`, {image: tag});
    const info = await docker.getImage(tag).inspect();
    return {image: tag, imageId: info.Id};
  } finally {
    rmSync(dir, {recursive: true, force: true});
  }
}

/**
 * The Dockerfile that installs a hash-pinned Python package with pip (requirements.txt in the
 * context) on `pythonImage`: `file` installs the file staged in `dist/` with no index; `index`
 * reads the index named in requirements.txt (an operator's extra CA may come as the build
 * argument EXTRA_CA_CERTS). pip, and an sdist's build backend (the package's own code), run as
 * nobody, never as the build container's root.
 */
function pipDockerfile(pythonImage: string, from: 'file' | 'index'): string {
  const index = from === 'index';
  return [
    '# Generated by `toolcell add` (src/hosted/server-image.ts).',
    `ARG PYTHON_IMAGE=${pythonImage}`,
    'FROM ${PYTHON_IMAGE} AS install',
    'USER root',
    ...(index ? [
      'ARG EXTRA_CA_CERTS=""',
      'RUN if [ -n "$EXTRA_CA_CERTS" ]; then printf \'%s\\n\' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/build-extra.crt && update-ca-certificates; fi',
    ] : []),
    'RUN apt-get update \\',
    ' && apt-get install -y --no-install-recommends python3-pip python3-setuptools python3-wheel \\',
    ` && ${APT_CLEAN}`,
    `RUN install -d -o 65534 -g 65534 /opt/toolcell/build ${SERVER_ROOT}`,
    'WORKDIR /opt/toolcell/build',
    'COPY requirements.txt ./',
    ...(index ? [] : ['COPY dist ./dist']),
    index ? '# pip (and an sdist\'s build backend, which runs the package\'s own code) run as nobody, not as the build container\'s root.'
      : '# pip (and the sdist\'s build backend, which runs the package\'s own code) run as nobody, not as the build container\'s root.',
    'USER 65534:65534',
    index ? 'ENV HOME=/tmp PIP_CERT=/etc/ssl/certs/ca-certificates.crt' : 'ENV HOME=/tmp',
    `RUN python3 -m pip install${index ? '' : ' --no-index'} --no-deps --require-hashes --no-build-isolation --no-cache-dir --disable-pip-version-check \\`,
    `      --target ${SERVER_ROOT}/lib -r requirements.txt \\`,
    ` && chmod -R a+rX,go-w ${SERVER_ROOT}`,
    'FROM ${PYTHON_IMAGE}',
    `COPY --from=install ${SERVER_ROOT} ${SERVER_ROOT}`,
    `ENV PYTHONPATH=${SERVER_ROOT}/lib PATH=${SERVER_ROOT}/lib/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    'USER 65534:65534',
    '',
  ].join('\n');
}
