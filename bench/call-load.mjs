// One load pattern shared by the HTTP benches: every client calls `bench__double` in turn, all clients at once.

/**
 * Warms each client with one call, then has all clients make `calls` calls of `bench__double`
 * each, concurrently (each client waits for its previous answer). A call counts as an error when
 * it throws, is an error result, or does not answer `2n`.
 * @param {Array<{callTool(p: {name: string, arguments: object}): Promise<any>}>} clients connected MCP clients
 * @param {number} calls calls per client
 * @returns {Promise<{latencies: number[], errors: string[], seconds: number}>} per-call latencies in ms
 *   (successful calls, in completion order), error descriptions, and wall-clock seconds of the run
 */
export async function driveDoubleCalls(clients, calls) {
  for (const client of clients) await client.callTool({name: 'bench__double', arguments: {n: 1}}); // warm-up
  const latencies = [];
  const errors = [];
  const started = performance.now();
  await Promise.all(clients.map(async (client, c) => {
    for (let i = 0; i < calls; i++) {
      const n = c * 1000 + i;
      const t = performance.now();
      try {
        const result = await client.callTool({name: 'bench__double', arguments: {n}});
        latencies.push(performance.now() - t);
        if (result.isError || result.structuredContent?.value !== n * 2) errors.push(`client ${c} call ${i}: ${JSON.stringify(result).slice(0, 200)}`);
      } catch (err) {
        errors.push(`client ${c} call ${i}: ${err.message}`);
      }
    }
  }));
  return {latencies, errors, seconds: (performance.now() - started) / 1000};
}
