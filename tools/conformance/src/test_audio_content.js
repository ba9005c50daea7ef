/** Conformance fixture `test_audio_content` (scenario tools-call-audio): one audio item, mimeType exactly audio/wav. */
import {SILENT_WAV} from './media.js';

export default function testAudioContent() {
  return {content: [{type: 'audio', data: SILENT_WAV, mimeType: 'audio/wav'}]};
}
