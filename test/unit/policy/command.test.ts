import assert from 'node:assert/strict';
import {test} from 'node:test';
import {ToolcellError} from '../../../src/errors.ts';
import {authorizeArgv, buildArgv} from '../../../src/policy/command.ts';

const allowed = new Map([['grep', '/usr/bin/grep'], ['/usr/bin/grep', '/usr/bin/grep'], ['wc', '/usr/bin/wc']]);

test('a {{field}} placeholder becomes exactly one argv element', () => {
  assert.deepEqual(buildArgv(['python3', '-c', '{{code}}'], {code: 'print(1)'}), ['python3', '-c', 'print(1)']);
});

test('shell metacharacters stay literal inside their element', () => {
  const hostile = ['; rm -rf /', '$(id)', '`id`', 'a\nb', `"'quoted'"`, '| cat /etc/passwd', '&& reboot'];
  for (const value of hostile) {
    assert.deepEqual(buildArgv(['grep', '{{pattern}}', 'file'], {pattern: value}), ['grep', value, 'file']);
  }
});

test('{{...field}} spreads an array into one element per item; absent optional fields drop out', () => {
  assert.deepEqual(buildArgv(['{{command}}', '{{...args}}'], {command: 'grep', args: ['-n', 'x y', '*.ts']}), ['grep', '-n', 'x y', '*.ts']);
  assert.deepEqual(buildArgv(['wc', '{{flag}}', '{{...files}}'], {}), ['wc']);
  assert.deepEqual(buildArgv(['echo', '{{n}}', '{{obj}}'], {n: 3, obj: {a: 1}}), ['echo', '3', '{"a":1}']);
});

test('a NUL byte in an argument is refused as INVALID_ARGUMENTS', () => {
  assert.throws(() => buildArgv(['grep', '{{p}}'], {p: 'a\0b'}), (e: unknown) => e instanceof ToolcellError && e.code === 'INVALID_ARGUMENTS');
});

test('an allowlisted argv[0] is replaced by its absolute path in the image', () => {
  assert.deepEqual(authorizeArgv(['grep', '-r', 'x'], allowed, 'shell'), ['/usr/bin/grep', '-r', 'x']);
  assert.deepEqual(authorizeArgv(['/usr/bin/grep', 'x'], allowed, 'shell'), ['/usr/bin/grep', 'x']);
});

for (const argv0 of ['curl', 'GREP', 'grep ', '/bin/grep', '../usr/bin/grep', 'sh', '', 'grep;id']) {
  test(`argv[0] ${JSON.stringify(argv0)} is DENIED with what is allowed`, () => {
    assert.throws(() => authorizeArgv([argv0, 'x'], allowed, 'shell'), (e: unknown) => {
      assert.ok(e instanceof ToolcellError);
      assert.equal(e.code, 'DENIED');
      assert.match(e.message, /is not allowed by profile "shell"\. Allowed: grep, wc\./);
      assert.equal(e.data.rule, 'commands');
      return true;
    });
  });
}
