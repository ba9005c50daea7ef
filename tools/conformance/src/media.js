/**
 * Fixture media for the conformance tools (not a tool itself; imported by the tool
 * sources and bundled into each). Generated once with Node (zlib + a CRC-32) and checked
 * by test/integration/tools/conformance.test.ts.
 */

/** A 1×1 red pixel PNG (8-bit RGB), base64, 69 bytes decoded. */
export const RED_PIXEL_PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC';

/** A WAV file: PCM, mono, 8000 Hz, 8-bit, 8 samples of silence (1 ms), base64, 52 bytes decoded. */
export const SILENT_WAV = 'UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQgAAACAgICAgICAgA==';
