// deploy/kubernetes/ validated offline (no cluster runs here): every document against the
// Kubernetes API schemas of kubernetes-models (types, required fields, enums, formats), then the
// cross-references a schema cannot see: selectors match the pods they mean, ports and probes hit
// what the server serves, the ConfigMap's config passes our own service-config schema and may
// bind 0.0.0.0, the HPA scales the Deployment on a metric /metrics really exports.
// Not checked (kubernetes-models' validators ignore unknown fields): a misspelt optional field;
// `kubectl apply --dry-run=server --validate=strict -k deploy/kubernetes` on a cluster does that.
import assert from 'node:assert/strict';
import {readdirSync, readFileSync} from 'node:fs';
import {request as httpRequest} from 'node:http';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {parseAllDocuments, parse as parseYaml} from 'yaml';
import {Deployment} from 'kubernetes-models/apps/v1';
import {HorizontalPodAutoscaler} from 'kubernetes-models/autoscaling/v2';
import {NetworkPolicy} from 'kubernetes-models/networking.k8s.io/v1';
import {PodDisruptionBudget} from 'kubernetes-models/policy/v1';
import {ConfigMap, Namespace, Service, ServiceAccount} from 'kubernetes-models/v1';
import {ServiceMetrics} from '../../../src/frontend/metrics.ts';
import {parseListenAddress} from '../../../src/frontend/http/serve-http-command.ts';
import {assertMayListen, parseServiceConfig} from '../../../src/policy/service-config.ts';
import {fakeRuntime, REPO, startService, writeFixtures, type Fixtures} from '../../e2e/http/support.ts';

const DIR = join(REPO, 'deploy/kubernetes');

/**
 * Service-config keys the ConfigMap already uses that other branches of issue 12 add to the
 * schema (h-redis: `redis`). Removed before the config is validated here; the lead empties this
 * list once they are merged, so that the whole config is checked.
 */
const PENDING_CONFIG_KEYS: readonly string[] = [];

/** Files in the folder that kustomization.yaml does not apply, and why. */
const NOT_APPLIED: Record<string, string> = {
  'kustomization.yaml': 'the kustomization itself',
  'prometheus-adapter-rules.yaml': 'configuration for the operator\'s prometheus-adapter, not a Kubernetes object',
};

const MODEL_CLASSES: Record<string, new (data: never) => {validate(): void}> = {
  'v1/Namespace': Namespace, 'v1/ServiceAccount': ServiceAccount, 'v1/ConfigMap': ConfigMap, 'v1/Service': Service,
  'apps/v1/Deployment': Deployment, 'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler, 'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
};

// Loose views of the objects, for the cross-reference checks (the schema check is the validators').
type Labels = Record<string, string>;
interface K8sObject {apiVersion: string; kind: string; metadata: {name: string; namespace?: string; labels?: Labels}; spec?: any; data?: Record<string, string>; file: string}

const kustomization = parseYaml(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8')) as {resources: string[]; namespace: string};
const objects: K8sObject[] = [];
for (const file of kustomization.resources) {
  for (const doc of parseAllDocuments(readFileSync(join(DIR, file), 'utf8'))) {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const value = doc.toJS() as K8sObject | null;
    if (value !== null) objects.push({...value, file});
  }
}
const find = (kind: string, name: string): K8sObject => {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  assert.ok(found, `${kind}/${name} is defined`);
  return found;
};
const matches = (selector: Labels, labels: Labels | undefined) => Object.entries(selector).every(([k, v]) => labels?.[k] === v);

const toolcell = find('Deployment', 'toolcell');
const pod = toolcell.spec.template;
const container = pod.spec.containers.find((c: {name: string}) => c.name === 'toolcell');
const configMap = find('ConfigMap', 'toolcell-config');
const rawConfig = JSON.parse(configMap.data!['service.json']!) as Record<string, unknown>;
const config = parseServiceConfig('configmap.yaml service.json', JSON.stringify(Object.fromEntries(Object.entries(rawConfig).filter(([k]) => !PENDING_CONFIG_KEYS.includes(k)))));
const arg = (flag: string) => container.args[container.args.indexOf(flag) + 1] as string;

test('kustomization.yaml applies every manifest in the folder, and each one exists', () => {
  const yamls = readdirSync(DIR).filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'));
  assert.deepEqual(yamls.filter((f) => !kustomization.resources.includes(f) && !(f in NOT_APPLIED)), [], 'manifests not applied');
  assert.deepEqual(kustomization.resources.filter((f) => !yamls.includes(f)), [], 'listed but missing');
  assert.ok(readdirSync(DIR).includes('README.md'), 'deploy/kubernetes/README.md describes the topology');
});

test('every document validates against the Kubernetes API schema of its apiVersion/kind (kubernetes-models)', () => {
  const kinds = new Set<string>();
  for (const object of objects) {
    const Model = MODEL_CLASSES[`${object.apiVersion}/${object.kind}`];
    assert.ok(Model, `${object.file}: no validator for ${object.apiVersion} ${object.kind}; add it to MODEL_CLASSES`);
    const {file: _file, ...data} = object;
    assert.doesNotThrow(() => new Model(data as never).validate(), `${object.file}: ${object.kind}/${object.metadata.name}`);
    kinds.add(object.kind);
    if (object.kind !== 'Namespace') assert.equal(object.metadata.namespace, kustomization.namespace, `${object.file}: ${object.kind}/${object.metadata.name} is in the namespace`);
  }
  for (const kind of ['Deployment', 'Service', 'ConfigMap', 'PodDisruptionBudget', 'HorizontalPodAutoscaler', 'NetworkPolicy']) assert.ok(kinds.has(kind), `a ${kind} is defined`);
});

test('the validators do catch a wrong type (so the check above is not vacuous)', () => {
  const {file: _file, ...data} = toolcell;
  const broken = structuredClone(data);
  broken.spec.template.spec.containers[0].ports[0].containerPort = '8443';
  assert.throws(() => new Deployment(broken as never).validate(), /containerPort must be integer/);
});

test('the ConfigMap config passes the service-config schema, may bind the address in args, and its files are the mounted ones', () => {
  const {host, port} = parseListenAddress(arg('--http'));
  assert.doesNotThrow(() => assertMayListen(host, config), 'non-loopback bind: authentication and TLS configured');
  assert.equal(container.ports.find((p: {name: string}) => p.name === 'https').containerPort, port);
  const mounts = container.volumeMounts as Array<{name: string; mountPath: string; subPath?: string}>;
  const volumes = pod.spec.volumes as Array<{name: string; configMap?: {name: string}; secret?: {secretName: string; defaultMode?: number}; hostPath?: {path: string; type?: string}}>;
  const configMount = mounts.find((m) => m.mountPath === arg('--config'));
  assert.ok(configMount, '--config names a mounted file');
  assert.equal(volumes.find((v) => v.name === configMount.name)?.configMap?.name, configMap.metadata.name);
  assert.equal(configMount.subPath, 'service.json');
  assert.ok(config.tls !== undefined && 'cert' in config.tls, 'the service serves HTTPS itself');
  const tlsMount = mounts.find((m) => config.tls !== undefined && 'cert' in config.tls && config.tls.cert.startsWith(`${m.mountPath}/`) && config.tls.key.startsWith(`${m.mountPath}/`));
  assert.ok(tlsMount, 'tls.cert and tls.key lie in one mounted volume');
  const secret = volumes.find((v) => v.name === tlsMount.name)?.secret;
  assert.ok(secret, 'the TLS files come from a Secret');
  assert.equal(secret.defaultMode, 0o440, 'mode 0440: readable by owner (root) and the pod fsGroup only, which readTlsFiles accepts');
  assert.equal(pod.spec.securityContext.fsGroup, pod.spec.securityContext.runAsGroup, 'the key file\'s group is the service\'s group');
  assert.ok(pod.spec.terminationGracePeriodSeconds * 1000 > config.shutdown.drainMs + 5000, 'the grace period outlasts the drain');
  const socket = volumes.find((v) => v.hostPath?.path === '/var/run/docker.sock');
  assert.equal(socket?.hostPath?.type, 'Socket', 'the engine is the node\'s Docker socket (README.md says what that grants)');
  // Node state (installation key, uid leases) on the node, prepared by the init container, one replica per node.
  const nodeState = volumes.find((v) => v.name === 'node-state');
  assert.equal(nodeState?.hostPath?.type, 'DirectoryOrCreate');
  const stateMount = mounts.find((m) => m.name === 'node-state')!.mountPath;
  const env = (name: string) => container.env.find((e: {name: string}) => e.name === name)?.value as string | undefined;
  for (const name of ['TOOLCELL_STATE_DIR', 'TOOLCELL_UID_LEASE_DIR']) assert.ok(env(name)?.startsWith(`${stateMount}/`), `${name} lies on the node-state volume`);
  const init = pod.spec.initContainers.find((c: {name: string}) => c.name === 'node-state');
  for (const name of ['TOOLCELL_STATE_DIR', 'TOOLCELL_UID_LEASE_DIR']) {
    assert.ok(init.command.join(' ').includes(env(name)!.slice(stateMount.length + 1)), `the init container prepares ${name}`);
  }
  assert.match(init.command.join(' '), /chown 10001:10001 .*chmod 0700/, 'owned by the service user, mode 0700 (checkPrivateDir, Provenance)');
  assert.deepEqual(init.securityContext.capabilities, {drop: ['ALL'], add: ['CHOWN', 'FOWNER']});
  const anti = pod.spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution;
  assert.ok(anti.some((t: {topologyKey: string; labelSelector: {matchLabels: Labels}}) => t.topologyKey === 'kubernetes.io/hostname' && matches(t.labelSelector.matchLabels, pod.metadata.labels)),
    'one replica per node: uid leases are judged by pid, and pods do not see each other\'s pids');
  assert.equal(toolcell.spec.strategy.rollingUpdate.maxSurge, 0, 'with one replica per node, a rollout cannot surge');
});

test('pod and container security context: non-root, no privilege escalation, read-only root, no capabilities, no API token', () => {
  assert.equal(pod.spec.securityContext.runAsNonRoot, true);
  assert.equal(pod.spec.securityContext.runAsUser, 10001, 'the uid of the service image');
  assert.equal(pod.spec.securityContext.seccompProfile.type, 'RuntimeDefault');
  assert.equal(container.securityContext.allowPrivilegeEscalation, false);
  assert.equal(container.securityContext.readOnlyRootFilesystem, true);
  assert.deepEqual(container.securityContext.capabilities.drop, ['ALL']);
  assert.equal(pod.spec.automountServiceAccountToken, false);
  assert.equal(find('ServiceAccount', pod.spec.serviceAccountName).metadata.name, 'toolcell');
  assert.ok(container.resources.requests.cpu && container.resources.requests.memory && container.resources.limits.memory, 'requests and a memory limit');
});

let fixtures: Fixtures;
before(async () => {
  fixtures = await writeFixtures();
});
after(async () => {
  await fixtures?.dispose();
});

test('the probes hit paths the server serves (200 from a running service, not 404), on the named HTTPS port; the scraper key reads /metrics by the pod address', async () => {
  const {runtime} = await fakeRuntime(fixtures);
  // The same service, plain HTTP on loopback (the TLS files live in the cluster's Secret).
  const {tls: _tls, ...plain} = rawConfig;
  const service = await startService(runtime, Object.fromEntries(Object.entries(plain).filter(([k]) => !PENDING_CONFIG_KEYS.includes(k))));
  try {
    for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
      const get = container[probe]?.httpGet as {path: string; port: string; scheme: string} | undefined;
      assert.ok(get, `${probe} is an httpGet`);
      assert.equal(get.scheme, 'HTTPS', `${probe}: the service serves HTTPS`);
      assert.ok(container.ports.some((p: {name: string}) => p.name === get.port), `${probe}: port "${get.port}" is a named container port`);
      const status = await new Promise<number>((resolve, reject) => {
        // Raw request: fetch cannot set Host, and the kubelet sends the pod address.
        const req = httpRequest({host: '127.0.0.1', port: service.port, path: get.path, headers: {Host: '10.244.1.7:8443'}, timeout: 10_000}, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
        req.on('error', reject);
        req.end();
      });
      assert.equal(status, 200, `${probe} ${get.path} (Host: the pod address, as the kubelet sends it)`);
    }
    // Prometheus scrapes each pod by its address with the key whose hash the ConfigMap lists
    // (the example key is "replace-me-prometheus-key"; the operator replaces both).
    const scraped = await new Promise<number>((resolve, reject) => {
      const req = httpRequest({host: '127.0.0.1', port: service.port, path: '/metrics', headers: {Host: '10.244.1.7:8443', Authorization: 'Bearer replace-me-prometheus-key'}, timeout: 10_000}, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
      req.on('error', reject);
      req.end();
    });
    assert.equal(scraped, 200, 'the listed scraper reads /metrics by the pod address');
    assert.equal(container.readinessProbe.httpGet.path, '/readyz');
    assert.equal(container.livenessProbe.httpGet.path, '/healthz');
  } finally {
    await service.shutdown({drainMs: 0});
  }
});

test('Services, the PodDisruptionBudget and the NetworkPolicies select the pods they mean, on the ports those pods serve', () => {
  const redis = find('Deployment', 'redis');
  const podLabels = pod.metadata.labels as Labels;
  const redisLabels = redis.spec.template.metadata.labels as Labels;
  assert.ok(matches(toolcell.spec.selector.matchLabels, podLabels), 'Deployment selector matches its template');
  assert.ok(matches(redis.spec.selector.matchLabels, redisLabels));
  assert.ok(!matches(toolcell.spec.selector.matchLabels, redisLabels) && !matches(redis.spec.selector.matchLabels, podLabels), 'the two selectors are disjoint');

  const svc = find('Service', 'toolcell');
  assert.ok(matches(svc.spec.selector, podLabels) && !matches(svc.spec.selector, redisLabels));
  assert.ok(svc.spec.ports.every((p: {targetPort: string}) => container.ports.some((c: {name: string}) => c.name === p.targetPort)), 'Service targetPort is a named port of the pod');
  const redisSvc = find('Service', 'redis');
  assert.ok(matches(redisSvc.spec.selector, redisLabels));
  const redisPort = redis.spec.template.spec.containers[0].ports[0];
  assert.equal(redisSvc.spec.ports[0].targetPort, redisPort.name);
  const redisUrl = new URL(String((rawConfig.redis as {url: string}).url));
  assert.match(redisUrl.hostname, new RegExp(`^redis\\.${kustomization.namespace}\\.svc(\\.cluster\\.local)?$`), 'config redis.url names the redis Service');
  assert.equal(Number(redisUrl.port), redisSvc.spec.ports[0].port);

  const pdb = find('PodDisruptionBudget', 'toolcell');
  assert.ok(matches(pdb.spec.selector.matchLabels, podLabels));
  assert.ok(pdb.spec.maxUnavailable < toolcell.spec.replicas);

  const policy = find('NetworkPolicy', 'toolcell');
  assert.ok(matches(policy.spec.podSelector.matchLabels, podLabels));
  assert.deepEqual(policy.spec.ingress.flatMap((r: {ports: Array<{port: number}>}) => r.ports.map((p) => p.port)), [container.ports[0].containerPort], 'ingress only on the service port');
  const toRedis = policy.spec.egress.find((r: {ports: Array<{port: number}>}) => r.ports.some((p) => p.port === redisPort.containerPort));
  assert.ok(toRedis && matches(toRedis.to[0].podSelector.matchLabels, redisLabels), 'egress to Redis selects the Redis pods');
  const redisPolicy = find('NetworkPolicy', 'redis');
  assert.ok(matches(redisPolicy.spec.podSelector.matchLabels, redisLabels));
  assert.ok(matches(redisPolicy.spec.ingress[0].from[0].podSelector.matchLabels, podLabels), 'Redis admits the toolcell pods');
  assert.deepEqual(redisPolicy.spec.egress, [], 'Redis may connect nowhere');
  const deny = find('NetworkPolicy', 'default-deny');
  assert.deepEqual(deny.spec.podSelector, {});
  assert.deepEqual([...deny.spec.policyTypes].sort(), ['Egress', 'Ingress']);
});

test('the HPA scales the toolcell Deployment on a Pods metric that prometheus-adapter derives from a series /metrics exports', async () => {
  const hpa = find('HorizontalPodAutoscaler', 'toolcell');
  assert.deepEqual(hpa.spec.scaleTargetRef, {apiVersion: toolcell.apiVersion, kind: 'Deployment', name: toolcell.metadata.name});
  assert.ok(hpa.spec.minReplicas >= 2 && hpa.spec.minReplicas <= toolcell.spec.replicas && hpa.spec.maxReplicas > hpa.spec.minReplicas);
  const metric = hpa.spec.metrics[0];
  assert.equal(metric.type, 'Pods');
  const adapter = parseYaml(readFileSync(join(DIR, 'prometheus-adapter-rules.yaml'), 'utf8')) as {rules: Array<{seriesQuery: string; name: {matches: string; as: string}; metricsQuery: string}>};
  const rule = adapter.rules.find((r) => r.name.as === metric.pods.metric.name);
  assert.ok(rule, `an adapter rule serves "${metric.pods.metric.name}"`);
  const series = /^([a-z_:]+)\{/.exec(rule.seriesQuery)?.[1];
  const metrics = new ServiceMetrics({defaultMetrics: false});
  metrics.watchQueues(() => ({isolate: {running: 1, queued: 2}} as never));
  const exposition = (await metrics.render()).body;
  assert.match(exposition, new RegExp(`^${series}\\{[^}]*state="queued"`, 'm'), `/metrics exports ${series} with state="queued"`);
  assert.match(rule.metricsQuery, /state="queued"/);
});
