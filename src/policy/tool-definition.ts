// A loaded tool: its manifest, profile, compiled schemas and MCP name.
import type {ValidateFunction} from 'ajv';
import type {ContainerEntry} from './manifest-schema.ts';
import type {ToolPin} from './pins.ts';
import type {Profile} from './profile-schema.ts';

/**
 * A loaded, validated tool: everything needed to list it and to build a job for it.
 * Built once when packages load; immutable afterwards.
 */
export interface ToolDefinition {
  /** MCP name: `<package>__<tool>`, or the bare tool name for a package the operator serves unprefixed. */
  readonly name: string;
  readonly packageName: string;
  readonly packageVersion: string;
  readonly toolName: string;
  readonly title?: string;
  readonly description: string;
  readonly inputSchema: Readonly<Record<string, unknown>>;
  readonly outputSchema?: Readonly<Record<string, unknown>>;
  /** The operator's profile this tool runs under. */
  readonly profile: Profile;
  readonly validateInput: ValidateFunction;
  readonly validateOutput?: ValidateFunction;
  /** Isolate tools: the bundled module's source, read at load time, and a package-relative file name. */
  readonly isolate?: {readonly source: string; readonly filename: string};
  /** Container tools: the manifest's container entry. */
  readonly container?: ContainerEntry;
  /** Tools of a hosted MCP server: how to start it and what was pinned. */
  readonly server?: HostedServerEntry;
  /** Host path of the package directory: for logs and `toolcell list`, never for clients. */
  readonly packageDir: string;
}

/** The MCP name of a tool: `<package>__<tool>`. */
export const mcpToolName = (packageName: string, toolName: string): string => `${packageName}__${toolName}`;

/** A hosted MCP server's tool as loaded (manifest-schema.ts `HostedPackageManifest`). */
export interface HostedServerEntry {
  /** The tool's name as the server lists it. */
  readonly toolName: string;
  readonly source: string;
  /** Image reference written at add (for operators), and the image ID every container is created from. */
  readonly image: string;
  readonly imageId: string;
  /** The server's argv in the image, before argv[0] is resolved through the profile's allowlist, then `args`. */
  readonly command: readonly string[];
  readonly args: readonly string[];
  readonly lifetime: 'call' | 'principal';
  readonly idleMs?: number;
  /** This tool's pin. */
  readonly pin: ToolPin;
  /** Every pinned tool of the package, by server tool name. */
  readonly pins: ReadonlyMap<string, ToolPin>;
  /**
   * Set when a pin broke before any call (the profile changed since add; the image tag now names
   * another image): every call is `DENIED` with `rule: "pin"`, before any sandbox.
   */
  readonly drift?: {readonly message: string; readonly changes: readonly string[]};
}
