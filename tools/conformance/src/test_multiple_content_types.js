/** Conformance fixture `test_multiple_content_types` (scenario tools-call-mixed-content): text, image and resource items. */
import {RED_PIXEL_PNG} from './media.js';

export default function testMultipleContentTypes() {
  return {
    content: [
      {type: 'text', text: 'Multiple content types test:'},
      {type: 'image', data: RED_PIXEL_PNG, mimeType: 'image/png'},
      {
        type: 'resource',
        resource: {uri: 'test://mixed-content-resource', mimeType: 'application/json', text: '{"test":"data","value":123}'},
      },
    ],
  };
}
