/** Conformance fixture `test_image_content` (scenario tools-call-image): one PNG image item. */
import {RED_PIXEL_PNG} from './media.js';

export default function testImageContent() {
  return {content: [{type: 'image', data: RED_PIXEL_PNG, mimeType: 'image/png'}]};
}
