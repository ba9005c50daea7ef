/**
 * Provenance: what this installation can prove it created, so that reaping (containers and
 * orphaned runtime shims) never touches anything else on a shared engine (issue 11 item 5).
 *
 * - Containers: each gets a name `toolcell-<uuid>` and a label `toolcell.proof` =
 *   HMAC-SHA256(installation key, name NUL owner-label) (RFC 2104). Labels are public to anyone
 *   with engine access, so a look-alike can copy every label, but not make a proof for a name
 *   and owner of its own; a copied proof only fits our own container's (unique) name and owner.
 * - Runtime shims outlive their container's listing, so labels cannot be read for them: the id
 *   of each container created is recorded as an empty file `containers/<id>` in the state
 *   directory, removed once the container is removed; only recorded ids' shims are reaped.
 *
 * State directory: `$TOOLCELL_STATE_DIR`, else `/var/lib/toolcell` as root, else
 * `$XDG_STATE_HOME/toolcell` (default `~/.local/state/toolcell`). The key is `reaper.key`
 * (64 hex digits), created on first use, mode 0600 in a 0700 directory, and only used when it
 * is owned by this process's euid and not readable by group or others. When none can be
 * created or trusted, a key held in memory is used: this process still proves and reaps its
 * own containers, but leftovers of earlier processes are then never reaped (logged at WARN).
 * Does NOT protect against someone who can read the key file (root, the same user): they can
 * make containers this installation will reap; they can remove containers anyway.
 */
import {createHmac, randomBytes, randomUUID, timingSafeEqual} from 'node:crypto';
import {closeSync, fstatSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, unlinkSync, writeFileSync} from 'node:fs';
import {unlink} from 'node:fs/promises';
import {homedir} from 'node:os';
import {join} from 'node:path';
import {log as rootLog} from '../../log.ts';
import {OWNER_LABEL} from './host-config.ts';

const log = rootLog.child({component: 'container-provenance'});

/** Label carrying a container's proof of origin (hex HMAC-SHA256). */
export const PROOF_LABEL = 'toolcell.proof';
/** Prefix of the names toolcell gives its containers. */
const NAME_PREFIX = 'toolcell-';
const KEY_FILE = 'reaper.key';
const RECORDS_DIR = 'containers';
const CONTAINER_ID = /^[0-9a-f]{64}$/;

/** The state directory for this process (see the file comment). */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TOOLCELL_STATE_DIR) return env.TOOLCELL_STATE_DIR;
  if (process.geteuid?.() === 0) return '/var/lib/toolcell';
  return join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'toolcell');
}

/** What the engine's container list says about one container (Docker API `GET /containers/json`). */
export interface ListedContainer {
  Id: string;
  Names?: string[];
  Labels?: Record<string, string>;
}

/** The key and records of one installation (one state directory). */
export class Provenance {
  readonly #key: Buffer;
  /** Records directory, or undefined when the state directory is not usable. */
  readonly #records: string | undefined;

  private constructor(key: Buffer, records: string | undefined) {
    this.#key = key;
    this.#records = records;
  }

  static readonly #byDir = new Map<string, Provenance>();

  /**
   * The provenance of the installation whose state lives in `dir` (default
   * {@link defaultStateDir}), loading or creating its key. Never throws: an unusable directory
   * gives an in-memory key (see the file comment).
   */
  static of(dir: string = defaultStateDir()): Provenance {
    let p = Provenance.#byDir.get(dir);
    if (!p) {
      p = Provenance.#load(dir);
      Provenance.#byDir.set(dir, p);
    }
    return p;
  }

  static #load(dir: string): Provenance {
    try {
      mkdirSync(join(dir, RECORDS_DIR), {recursive: true, mode: 0o700});
      const euid = process.geteuid?.();
      const dirStat = statSync(dir);
      if ((euid !== undefined && dirStat.uid !== euid) || (dirStat.mode & 0o022) !== 0) {
        throw new Error(`${dir} must be owned by uid ${euid} and writable by nobody else`);
      }
      const keyPath = join(dir, KEY_FILE);
      try {
        statSync(keyPath);
      } catch {
        // Create atomically: write a private temp file, then link it into place (EEXIST: another process won).
        const tmp = join(dir, `.${KEY_FILE}.${process.pid}.${randomUUID()}`);
        writeFileSync(tmp, randomBytes(32).toString('hex'), {mode: 0o600, flag: 'wx'});
        try {
          linkSync(tmp, keyPath);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        } finally {
          unlinkSync(tmp);
        }
      }
      const fd = openSync(keyPath, 'r');
      try {
        const st = fstatSync(fd);
        if ((euid !== undefined && st.uid !== euid) || (st.mode & 0o077) !== 0 || !st.isFile()) {
          throw new Error(`${keyPath} must be a file owned by uid ${euid} with mode 0600`);
        }
        const hex = readFileSync(fd, 'utf8').trim();
        if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error(`${keyPath} does not hold a 64-hex-digit key`);
        return new Provenance(Buffer.from(hex, 'hex'), join(dir, RECORDS_DIR));
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      log.warn({err, dir}, 'no usable toolcell state directory: containers left by earlier processes will not be reaped (set TOOLCELL_STATE_DIR)');
      return new Provenance(randomBytes(32), undefined);
    }
  }

  #proof(name: string, owner: string): Buffer {
    return createHmac('sha256', this.#key).update(`${name}\0${owner}`).digest();
  }

  /**
   * A fresh container name and the labels that prove it ours: `{name, labels: {toolcell.proof}}`
   * for a container whose owner label is `owner`. Merge both into the create options.
   */
  claim(owner: string): {name: string; labels: Record<string, string>} {
    const name = `${NAME_PREFIX}${randomUUID()}`;
    return {name, labels: {[PROOF_LABEL]: this.#proof(name, owner).toString('hex')}};
  }

  /** True when a listed container carries a valid proof for its own name and owner label. */
  proves(container: ListedContainer): boolean {
    const name = container.Names?.length === 1 ? container.Names[0]!.replace(/^\//, '') : undefined;
    const proof = container.Labels?.[PROOF_LABEL];
    if (!name?.startsWith(NAME_PREFIX) || proof === undefined || !/^[0-9a-f]{64}$/.test(proof)) return false;
    return timingSafeEqual(Buffer.from(proof, 'hex'), this.#proof(name, container.Labels?.[OWNER_LABEL] ?? ''));
  }

  /** Records that container `id` was created by this installation (for shim reaping). Never throws. */
  record(id: string): void {
    if (!this.#records || !CONTAINER_ID.test(id)) return;
    try {
      writeFileSync(join(this.#records, id), '', {mode: 0o600});
    } catch (err) {
      log.debug({err, containerId: id}, 'could not record a container id');
    }
  }

  /** Drops the record of a container that is gone with its runtime processes. Never throws. */
  async forget(id: string): Promise<void> {
    if (!this.#records || !CONTAINER_ID.test(id)) return;
    await unlink(join(this.#records, id)).catch(() => undefined);
  }

  /** Ids of containers this installation recorded and has not forgotten. */
  recorded(): string[] {
    if (!this.#records) return [];
    try {
      return readdirSync(this.#records).filter((e) => CONTAINER_ID.test(e));
    } catch {
      return [];
    }
  }

  /**
   * Drops records older than `minAgeMs` (default 1 h) whose container the engine no longer
   * lists (`known`: the ids it lists); their shims, if any, had that long to be reaped.
   */
  async prune(known: ReadonlySet<string>, minAgeMs = 3_600_000): Promise<void> {
    if (!this.#records) return;
    const now = Date.now();
    for (const id of this.recorded()) {
      if (known.has(id)) continue;
      try {
        if (now - statSync(join(this.#records, id)).mtimeMs > minAgeMs) await this.forget(id);
      } catch { /* gone */ }
    }
  }
}
