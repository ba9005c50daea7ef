/**
 * A hosted server's tools/call result rebuilt from the fields MCP defines, so nothing the server
 * adds (unknown keys, forged `toolcell/` metadata) reaches the client as if toolcell said it.
 */
import type {CallToolResult} from '@modelcontextprotocol/server';

/** Prefix of the `_meta` keys toolcell itself writes (`toolcell/error`, `toolcell/usage`); never relayed from a server. */
export const TOOLCELL_META_PREFIX = 'toolcell/';

/**
 * The fields of each content block type (MCP 2025-11-25 schema: TextContent, ImageContent,
 * AudioContent, ResourceLink, EmbeddedResource), besides `type`, `annotations` and `_meta`.
 */
const CONTENT_FIELDS: Record<string, readonly string[]> = {
  text: ['text'],
  image: ['data', 'mimeType'],
  audio: ['data', 'mimeType'],
  resource_link: ['uri', 'name', 'title', 'description', 'mimeType', 'size', 'icons'],
  resource: ['resource'],
};
/** Fields of an embedded resource's contents (TextResourceContents / BlobResourceContents). */
const RESOURCE_FIELDS = ['uri', 'mimeType', 'text', 'blob'] as const;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `meta` without any `toolcell/` key; undefined when nothing is left or it is not an object. */
function serverMeta(meta: unknown): Record<string, unknown> | undefined {
  if (!isRecord(meta)) return undefined;
  const kept = Object.entries(meta).filter(([k]) => !k.startsWith(TOOLCELL_META_PREFIX));
  return kept.length > 0 ? Object.fromEntries(kept) : undefined;
}

function pick(from: Record<string, unknown>, fields: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of fields) if (Object.hasOwn(from, f)) out[f] = from[f];
  return out;
}

function contentBlock(block: Record<string, unknown>): Record<string, unknown> {
  const type = String(block.type);
  const out: Record<string, unknown> = {type, ...pick(block, CONTENT_FIELDS[type] ?? [])};
  if (type === 'resource' && isRecord(block.resource)) {
    const meta = serverMeta(block.resource._meta);
    out.resource = {...pick(block.resource, RESOURCE_FIELDS), ...(meta ? {_meta: meta} : {})};
  }
  if (Object.hasOwn(block, 'annotations')) out.annotations = block.annotations;
  const meta = serverMeta(block._meta);
  if (meta) out._meta = meta;
  return out;
}

/**
 * Rebuilds `value` (already a valid CallToolResult by the SDK's schema) from `content` (each
 * block with only its spec fields), `structuredContent` and `isError: true`; the server's
 * top-level `_meta` and unknown keys are dropped, and every `_meta` key starting with
 * {@link TOOLCELL_META_PREFIX} is removed from content blocks and embedded resources. Pure.
 * Does NOT: look inside `structuredContent` or text (the server's data, relayed as data).
 */
export function rebuildRelayedResult(value: CallToolResult): CallToolResult {
  const v = value as unknown as Record<string, unknown>;
  const content = (Array.isArray(v.content) ? v.content : []).filter(isRecord).map(contentBlock);
  return {
    content,
    ...(isRecord(v.structuredContent) ? {structuredContent: v.structuredContent} : {}),
    ...(v.isError === true ? {isError: true} : {}),
  } as CallToolResult;
}
